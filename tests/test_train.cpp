// Training: optimizer pieces against their formulas, NaN localisation, and the trainer end to end on
// a slice of Fashion-MNIST, including the bitwise-resume guarantee.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "../apps/kat/device_flag.h"
#include "kat/core/error.h"
#include "kat/core/replica_pool.h"
#include "kat/data/image_io.h"
#include "kat/io/safetensors.h"
#include "kat/model/kat_model.h"
#include "kat/train/cpu_engine.h"
#include "kat/train/evaluate.h"
#include "kat/train/gpu_runner.h"
#include "kat/train/optim.h"
#include "kat/train/trainer.h"
#include "test_util.h"
#include "train_run_util.h"

using namespace kat;
namespace fs = std::filesystem;

TEST(TrainOptim, AdamWMatchesTorchFormula) {
  ParamTable t;
  t.add("w", {2}, ParamKind::Weight);
  t.add("b", {1}, ParamKind::Bias);
  AdamWConfig c;
  c.weight_decay = 0.1;
  AdamW opt(t, c);
  std::vector<float> p = {1.0f, -2.0f, 0.5f}, g = {0.3f, -0.1f, 0.2f};
  std::vector<double> pd(p.begin(), p.end()), m(3, 0), v(3, 0);
  for (int step = 1; step <= 3; ++step) {
    opt.step(p.data(), g.data(), 0.01);
    for (int i = 0; i < 3; ++i) {  // torch.optim.AdamW, decoupled decay on "w" only
      if (i < 2) pd[i] *= 1 - 0.01 * 0.1;
      m[i] = 0.9 * m[i] + 0.1 * g[i];
      v[i] = 0.999 * v[i] + 0.001 * double(g[i]) * g[i];
      const double mh = m[i] / (1 - std::pow(0.9, step)), vh = v[i] / (1 - std::pow(0.999, step));
      pd[i] -= 0.01 * mh / (std::sqrt(vh) + 1e-8);
    }
  }
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(p[i], pd[i], 1e-6);
}

TEST(TrainOptim, ParameterGroups) {
  KatModel m(ModelConfig::load("kat_micro_patch4_28"));
  AdamWConfig c;
  AdamW with(m.table(), c);
  c.decay_rational = false;
  AdamW without(m.table(), c);
  auto decays = [&](const AdamW& o, const std::string& n) { return o.decay_mask()[m.table().at(n).offset] != 0; };
  EXPECT_TRUE(decays(with, "blocks.0.mlp.fc1.weight"));
  EXPECT_TRUE(decays(with, "patch_embed.proj.weight"));
  EXPECT_FALSE(decays(with, "blocks.0.mlp.fc1.bias"));
  EXPECT_FALSE(decays(with, "blocks.0.norm1.weight"));
  EXPECT_FALSE(decays(with, "pos_embed"));
  EXPECT_FALSE(decays(with, "cls_token"));
  EXPECT_TRUE(decays(with, "blocks.0.mlp.act2.weight_denominator"));
  EXPECT_FALSE(decays(without, "blocks.0.mlp.act2.weight_denominator"));
}

TEST(TrainOptim, ScheduleEmaClip) {
  EXPECT_DOUBLE_EQ(cosine_lr(0, 100, 10, 1e-3, 1e-5, 0), 1e-5);
  EXPECT_NEAR(cosine_lr(5, 100, 10, 1e-3, 1e-5, 0), 1e-5 + 0.5 * (1e-3 - 1e-5), 1e-12);
  EXPECT_DOUBLE_EQ(cosine_lr(10, 100, 10, 1e-3, 1e-5, 0), 1e-3);
  EXPECT_NEAR(cosine_lr(55, 100, 10, 1e-3, 1e-5, 0), 0.5e-3, 1e-12);
  EXPECT_NEAR(cosine_lr(100, 100, 10, 1e-3, 1e-5, 1e-6), 1e-6, 1e-15);
  std::vector<float> e = {1, 2}, p = {3, 4};
  ema_update(e, p, 0.9);
  EXPECT_FLOAT_EQ(e[0], 1.2f);
  EXPECT_FLOAT_EQ(e[1], 2.2f);
  std::vector<float> g = {3, 4};
  EXPECT_DOUBLE_EQ(clip_grad_norm(g, 1.0), 5.0);
  EXPECT_NEAR(std::hypot(g[0], g[1]), 1.0, 1e-5);
}

TEST(TrainNaN, FirstNonFiniteNamesTheLayer) {
  ModelConfig cfg = ModelConfig::load("kat_micro_patch4_28");
  KatModel m(cfg);
  m.init_params(0);
  m.plan(2);
  std::vector<float> x(2 * 28 * 28, 0.3f);
  m.forward(x.data(), 2);
  EXPECT_EQ(m.first_nonfinite(), "");
  m.param("blocks.1.mlp.act2.weight_numerator")[5] = 1e38f;  // finite, but overflows F(x)
  m.forward(x.data(), 2);
  EXPECT_EQ(m.first_nonfinite(), "blocks.1.mlp.act2 output");
  m.param("blocks.0.attn.qkv.bias")[3] = NAN;
  EXPECT_EQ(m.first_nonfinite(), "parameter blocks.0.attn.qkv.bias");
}

using kat::test::tiny_run;

TEST(TrainRun, ResumeIsBitwiseIdentical) {
  const std::string a = kat::test::temp_path("kat_test_resume_a");
  const std::string b = kat::test::temp_path("kat_test_resume_b");
  fs::remove_all(a);
  fs::remove_all(b);
  kat::test::check_resume_bitwise(tiny_run(a), a, b);
  // metrics.jsonl: eval lines with epoch / test_top1 / test_loss; config.json present.
  std::ifstream in(b + "/metrics.jsonl");
  std::string line;
  int evals = 0, steps = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("test_top1")) {
      ++evals;
      EXPECT_TRUE(j.contains("epoch") && j.contains("test_loss") && j.contains("ema_test_top1"));
    } else {
      ++steps;
    }
  }
  EXPECT_EQ(evals, 2);
  EXPECT_GT(steps, 0);
  EXPECT_TRUE(fs::exists(b + "/config.json"));
  EXPECT_TRUE(fs::exists(b + "/best.safetensors"));
  int ckpts = 0;
  for (const auto& e : fs::directory_iterator(b)) ckpts += e.path().filename().string().rfind("ckpt-step", 0) == 0;
  EXPECT_EQ(ckpts, 2);  // keep_last
  fs::remove_all(a);
  fs::remove_all(b);
}

// --precision fp8 (the CPU emulation): a run killed and resumed gives bitwise the same losses,
// accuracies and weights, because the checkpoint holds the amax history (fp8.amax_history,
// fp8.amax_seen), and the run is not the fp32 one.
TEST(TrainRun, Fp8ResumeIsBitwiseIdentical) {
  const std::string a = kat::test::temp_path("kat_test_fp8_resume_a");
  const std::string b = kat::test::temp_path("kat_test_fp8_resume_b");
  const std::string c32 = kat::test::temp_path("kat_test_fp8_resume_fp32");
  fs::remove_all(a);
  fs::remove_all(b);
  fs::remove_all(c32);
  TrainConfig c = tiny_run(a);
  c.precision = "fp8";
  const kat::test::ResumeCheck r = kat::test::check_resume_bitwise(c, a, b);
  for (double l : r.full.step_losses) EXPECT_TRUE(std::isfinite(l));
  // The history in the checkpoint: (depth * 8 slots, 16 passes) and the passes seen (2 micro-batches
  // per step, 12 steps).
  const auto f = io::SafetensorsFile::load(r.rest.last_checkpoint);
  ASSERT_TRUE(f.has("fp8.amax_history") && f.has("fp8.amax_seen"));
  EXPECT_EQ(f.info("fp8.amax_history").shape, (std::vector<int64_t>{2 * 8, 16}));
  for (int64_t s : f.to_i64("fp8.amax_seen")) EXPECT_EQ(s, 24);
  std::ifstream in(b + "/config.json");
  EXPECT_EQ(nlohmann::json::parse(in)["train"]["precision"], "fp8");
  // The fp32 run of the same config differs from the first step on and has no FP8 tensors.
  TrainConfig c32cfg = tiny_run(c32);
  c32cfg.precision = "fp32";
  c32cfg.max_steps = 1;
  const TrainResult r32 = train(c32cfg);
  ASSERT_EQ(r32.step_losses.size(), 1u);
  EXPECT_NE(r32.step_losses[0], r.full.step_losses[0]);
  EXPECT_FALSE(io::SafetensorsFile::load(r32.last_checkpoint).has("fp8.amax_history"));
  fs::remove_all(a);
  fs::remove_all(b);
  fs::remove_all(c32);
}

// --precision: checked values, FP8 on several GPUs refused with the reason, and "auto" for configs
// without it.
TEST(TrainRun, PrecisionIsValidatedAndSaved) {
  TrainConfig c;
  c.validate();
  EXPECT_EQ(c.precision, "auto");
  for (const char* p : {"auto", "fp32", "fp8"}) {
    c.precision = p;
    c.validate();
    EXPECT_EQ(TrainConfig::from_json(c.to_json(), "test").precision, p);
  }
  // Checkpoints and config.json of older runs have no precision: auto.
  EXPECT_EQ(TrainConfig::from_json("{\"epochs\": 3}", "old").precision, "auto");
  c.precision = "fp16";
  kat::test::expect_error([&] { c.validate(); }, {"--precision", "fp16", "auto, fp32, bf16 or fp8"});
  c.precision = "bf16";
  kat::test::expect_error([&] { c.validate(); }, {"--precision bf16 is GPU only"});
  TrainConfig g;
  g.device = "cuda:0";
  g.devices = {0};
  g.validate();
  g.precision = "bf16";
  g.validate();
  g.precision = "fp8";
  g.validate();  // one GPU
  g.device = "cuda:0,1";
  g.devices = {0, 1};
  kat::test::expect_error([&] { g.validate(); }, {"--precision fp8 runs on one GPU", "own amax history"});
  g.device = "cuda:0";
  g.devices = {0};
  g.precision = "fp32";
  kat::test::expect_error([&] { g.validate(); }, {"--precision fp32 is not available on the GPU yet"});
}

// On resume the run keeps its saved config, except what does not change the math: the device,
// the stop step, and the GPU loader's mechanics, which come from the new command line (config.json
// of the resumed run records them); the recipe stays the saved one.
TEST(TrainRun, ResumeTakesLoaderMechanicsFromTheCommandLine) {
  const std::string d = kat::test::temp_path("kat_test_resume_mechanics");
  fs::remove_all(d);
  TrainConfig c = tiny_run(d);
  c.max_steps = 2;
  (void)train(c);
  TrainConfig again = tiny_run(d);
  again.max_steps = 3;
  again.decode_streams = 5;
  again.loader_nice = 7;
  again.decode_priority = "high";
  again.data_timeout = 12;
  again.lr = c.lr * 10;  // the recipe is not the command line's on resume
  const TrainResult r = train(again, d);
  EXPECT_EQ(r.steps, 3);
  std::ifstream in(d + "/config.json");
  const auto j = nlohmann::json::parse(in)["train"];
  EXPECT_EQ(j["decode_streams"], 5);
  EXPECT_EQ(j["loader_nice"], 7);
  EXPECT_EQ(j["decode_priority"], "high");
  EXPECT_EQ(j["data_timeout"], 12.0);
  EXPECT_EQ(j["lr"], c.lr);
  fs::remove_all(d);
}

TEST(TrainRun, LearnsAndRejectsBadConfig) {
  const std::string d = kat::test::temp_path("kat_test_learn");
  fs::remove_all(d);
  TrainConfig c = tiny_run(d);
  c.mixup = c.cutmix = 0;
  c.randaug_n = 0;
  c.random_erase = 0;
  c.accum_steps = 1;
  c.train_subset = 4096;
  c.test_subset = 500;
  c.epochs = 3;
  c.drop_path = 0;
  c.clip_grad = 0;
  c.lr = 3e-3;
  const TrainResult r = train(c);
  EXPECT_GT(r.final_top1, 60.0);  // 10 classes: chance is 10%; this tiny run reaches ~70%
  EXPECT_LT(r.step_losses.back(), r.step_losses.front());
  EXPECT_GT(r.train_seconds, 0.0);
  EXPECT_GE(r.data_wait_seconds, 0.0);
  EXPECT_LE(r.data_wait_seconds, r.train_seconds);
  // A fresh run must not write into a directory holding another run's checkpoints.
  kat::test::expect_error([&] { train(c); }, {"--resume"});
  fs::remove_all(d);
  TrainConfig bad = c;
  bad.crop = "zoom";
  EXPECT_THROW(train(bad), Error);
  bad = c;
  bad.model_overrides.push_back("in_chans=3");
  kat::test::expect_error([&] { train(bad); }, {"in_chans"});
  EXPECT_THROW(train(c, "/nonexistent/run"), Error);
  fs::remove_all(d);
}

// The last line of a run: the share of training time spent waiting for batches, and what to try
// when the loader sets the pace (>= 10 %).
TEST(TrainRun, DataWaitSummarySaysWhatSetsThePace) {
  TrainResult r;
  r.train_seconds = 100;
  r.data_wait_seconds = 5;
  TrainConfig tc;
  const std::string quiet = data_wait_summary(r, tc, "cpu", true);
  EXPECT_NE(quiet.find("(5 %)"), std::string::npos) << quiet;
  EXPECT_EQ(quiet.find("sets the pace"), std::string::npos) << quiet;
  r.data_wait_seconds = 40;
  tc.workers = 6;
  const std::string lazy = data_wait_summary(r, tc, "cpu", true);
  EXPECT_NE(lazy.find("(40 %)"), std::string::npos) << lazy;
  EXPECT_NE(lazy.find("6 workers"), std::string::npos) << lazy;
  EXPECT_NE(lazy.find("--decode gpu"), std::string::npos) << lazy;
  EXPECT_EQ(data_wait_summary(r, tc, "cpu", false).find("--decode gpu"), std::string::npos);
  const std::string gpu = data_wait_summary(r, tc, "gpu", true);
  EXPECT_NE(gpu.find("GPU data pipeline"), std::string::npos) << gpu;
  r.train_seconds = 0;  // nothing trained (e.g. resumed at the last step): no division by zero
  EXPECT_NE(data_wait_summary(r, tc, "cpu", true).find("(0 %)"), std::string::npos);
}

TEST(TrainDevice, ParseAndClearErrors) {
  // --device is parsed by the CLI (apps/kat/device_flag.h) into TrainConfig::devices.
  using cli::parse_device;
  using cli::parse_devices;
  EXPECT_EQ(parse_device("cpu"), -1);
  EXPECT_EQ(parse_device("cuda"), 0);
  EXPECT_EQ(parse_device("cuda:3"), 3);
  EXPECT_THROW(parse_device("gpu"), Error);
  EXPECT_THROW(parse_device("cuda:-1"), Error);
  EXPECT_THROW(parse_device("cuda:1x"), Error);
  EXPECT_EQ(parse_devices("cpu"), std::vector<int>{});
  EXPECT_EQ(parse_devices("cuda"), std::vector<int>{0});
  EXPECT_EQ(parse_devices("cuda:2"), std::vector<int>{2});
  EXPECT_EQ(parse_devices("cuda:0,1,3"), (std::vector<int>{0, 1, 3}));
  EXPECT_THROW(parse_devices("cuda:0,0"), Error);  // listed twice
  EXPECT_THROW(parse_devices("cuda:0,"), Error);   // empty entry
  EXPECT_THROW(parse_devices("cuda:0,x"), Error);
  EXPECT_THROW(parse_devices("cpu,cuda:0"), Error);
  EXPECT_THROW(parse_devices("gpu:0"), Error);
  TrainConfig c;
  c.device = "cuda";
  c.devices = {0};
  c.ema_decay = 0.999;  // the whole recipe runs on the GPU: accumulation, clipping and EMA validate
  c.accum_steps = 2;
  c.clip_grad = 1.0;
  EXPECT_NO_THROW(c.validate());
  c.devices = {};  // a device named but no GPU index given: the config is inconsistent
  EXPECT_THROW(c.validate(), Error);
  c.devices = {1, 1};
  EXPECT_THROW(c.validate(), Error);
  c.devices = {0};
  c.device = "cuda";
  if (!cuda_available()) {  // CI: no GPU -> a clear error, not a crash
    c.out_dir = kat::test::temp_path("kat_test_nogpu");
    c.train_subset = 256;
    c.test_subset = 64;
    c.progress = false;
    kat::test::expect_error([&] { train(c); }, {"cuda"});
    // Several GPUs: without NCCL in the build, or without GPUs, a clear error before any work.
    c.device = "cuda:0,1";
    c.devices = {0, 1};
    c.batch = 64;
    EXPECT_NO_THROW(c.validate());
    try {
      train(c);
      FAIL();
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_TRUE(m.find("NCCL") != std::string::npos || m.find("CUDA") != std::string::npos) << m;
    }
    c.batch = 63;  // not divisible by 2
    kat::test::expect_error([&] { train(c); }, {"divisible"});
    fs::remove_all(c.out_dir);
  }
}

// The data-parallel driver's thread pool: every replica index runs exactly once per call, on
// distinct threads at the same time (replica 1 waits for replica 0 and the reverse: a serial pool
// would hang, caught by the deadline), over many calls; an exception in any replica reaches the
// caller after the others finished, and the pool stays usable.
TEST(TrainDevice, ReplicaPoolRunsAllAtOnce) {
  ReplicaPool pool(3);
  std::vector<int> hits(3, 0);
  for (int call = 0; call < 200; ++call) {
    std::atomic<int> arrived{0};
    pool.run([&](int r) {
      hits[size_t(r)]++;
      arrived++;
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (arrived.load() < 3)
        ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "replicas not concurrent";
    });
  }
  EXPECT_EQ(hits, (std::vector<int>{200, 200, 200}));
  std::atomic<int> finished{0};
  kat::test::expect_error(
      [&] {
    pool.run([&](int r) {
      if (r == 2) throw Error("replica 2 failed");
      finished++;
    });
      },
      {"replica 2 failed"});
  EXPECT_EQ(finished.load(), 2);
  pool.run([&](int r) { hits[size_t(r)]--; });
  EXPECT_EQ(hits, (std::vector<int>{199, 199, 199}));
  ReplicaPool one(1);  // one replica: runs inline
  int ran = 0;
  one.run([&](int r) { ran += r + 1; });
  EXPECT_EQ(ran, 1);
}

// An image folder trained with --lazy-data (images decoded in the loader workers) follows the
// in-memory run bitwise: same losses at every step, same final accuracy; the flag survives in
// config.json (so --resume keeps it).
TEST(TrainLazyData, FolderLazyEqualsEager) {
  const fs::path root = fs::temp_directory_path() / ("kat_lazy_" + std::to_string(::getpid()));
  fs::remove_all(root);
  int k = 0;
  for (const char* split : {"train", "val"})
    for (const char* cls : {"x", "y"}) {
      fs::create_directories(root / split / cls);
      for (int i = 0; i < (split[0] == 't' ? 24 : 8); ++i, ++k) {
        const int h = 10 + k % 4, w = 12 + k % 3;
        std::vector<uint8_t> px(size_t(h) * w * 3);
        for (size_t j = 0; j < px.size(); ++j) px[j] = uint8_t((j * (cls[0] == 'x' ? 7 : 13) + k * 31) & 255);
        data::write_png((root / split / cls / (std::to_string(i) + ".png")).string(), h, w, 3, px.data());
      }
    }
  auto run = [&](bool lazy) {
    TrainConfig c;
    c.model = "kat_micro_patch4_28";
    c.model_overrides = {"depth=1",    "embed_dim=32", "num_heads=2",  "mlp_hidden=64",
                         "in_chans=3", "img_size=8",   "num_classes=2"};
    c.data = "folder:" + root.string();
    c.out_dir = (root / (lazy ? "run_lazy" : "run_eager")).string();
    c.epochs = 2;
    c.batch = 8;
    c.crop = "pad";  // (RandomResizedCrop differs by design: lazy folders crop from the original file)
    c.hflip = true;
    c.workers = 2;
    c.progress = false;
    c.lazy_data = lazy;
    return train(c);
  };
  // A model with more outputs (5) than the folder has classes (2): trains with 5-wide targets
  // (before, the engine read 5-wide rows from 2-wide targets: garbage, NaN, and a heap overflow
  // under ASan).
  {
    TrainConfig c;
    c.model = "kat_micro_patch4_28";
    c.model_overrides = {"depth=1",    "embed_dim=32", "num_heads=2",  "mlp_hidden=64",
                         "in_chans=3", "img_size=8",   "num_classes=5"};
    c.data = "folder:" + root.string();
    c.out_dir = (root / "run_wide").string();
    c.epochs = 2;
    c.batch = 8;
    c.mixup = 0.8;
    c.label_smoothing = 0.1;
    c.workers = 1;
    c.progress = false;
    const TrainResult r = train(c);
    ASSERT_FALSE(r.step_losses.empty());
    for (double l : r.step_losses) EXPECT_TRUE(std::isfinite(l));
    // Smoothed 5-way targets: the loss starts near ln 5, not ln 2.
    EXPECT_GT(r.step_losses.front(), 1.2);
  }
  const TrainResult eager = run(false), lazy = run(true);
  ASSERT_EQ(eager.step_losses.size(), lazy.step_losses.size());
  for (size_t i = 0; i < eager.step_losses.size(); ++i)
    EXPECT_EQ(eager.step_losses[i], lazy.step_losses[i]) << "step " << i;
  EXPECT_EQ(eager.final_top1, lazy.final_top1);
  std::ifstream cfg(root / "run_lazy" / "config.json");
  const auto j = nlohmann::json::parse(cfg);
  EXPECT_TRUE(j["train"]["lazy_data"].get<bool>());
  fs::remove_all(root);
}

// A process of a job (torchrun / srun, issue #14) loads its rows of every global batch through the
// trainer's own loader configuration (train_loader_config over TrainConfig::procs): the ranks'
// batches side by side are the one-process run's batches, bitwise (with Mixup / CutMix, whose
// pairs cross ranks), for training and evaluation; one process is the loader as before.
TEST(TrainJob, RanksLoadTheirShardsOfTheOneProcessBatches) {
  const data::Dataset ds = kat::test::synthetic(40, 28, 28, 1, 10, 5);
  TrainConfig tc;
  tc.batch = 12;
  tc.mixup = 0.8;
  tc.cutmix = 1.0;
  tc.crop = "pad";
  tc.hflip = true;
  tc.workers = 2;
  const ModelConfig mc = ModelConfig::load(tc.model);
  const data::LoaderConfig one = train_loader_config(tc, mc);
  EXPECT_EQ(one.shard_world, 1);  // no job: the whole batch
  for (const bool eval : {false, true}) {
    const data::LoaderConfig cfg1 = eval ? data::LoaderConfig::eval(one, 7) : one;
    data::Loader whole(ds, cfg1);
    std::vector<std::unique_ptr<data::Loader>> ranks;
    for (int r = 0; r < 3; ++r) {
      TrainConfig t = tc;
      t.procs.world_size = 3;
      t.procs.rank = r;
      const data::LoaderConfig c = train_loader_config(t, mc);
      EXPECT_EQ(c.batch_size, tc.batch);  // the global batch
      ranks.push_back(std::make_unique<data::Loader>(ds, eval ? data::LoaderConfig::eval(c, 7) : c));
    }
    whole.start_epoch(1, 0);
    for (auto& l : ranks) l->start_epoch(1, 0);
    data::Batch w, part;
    int batches = 0;
    while (whole.next(w)) {
      std::vector<float> images, targets;
      for (auto& l : ranks) {
        ASSERT_TRUE(l->next(part));
        images.insert(images.end(), part.images.begin(), part.images.end());
        targets.insert(targets.end(), part.targets.begin(), part.targets.end());
      }
      EXPECT_EQ(images, w.images) << "batch " << w.batch << (eval ? " (eval)" : "");
      EXPECT_EQ(targets, w.targets) << "batch " << w.batch << (eval ? " (eval)" : "");
      ++batches;
    }
    EXPECT_EQ(batches, eval ? 6 : 3);
  }
}

// kat train's --device under a launcher (apps/kat/device_flag.h): the process's GPU, its place in
// the job and the resolved rendezvous; without a launcher nothing changes.
TEST(TrainJob, LaunchEnvironmentPicksTheGpuAndRendezvous) {
  using cli::JobFlags;
  using cli::resolve_train_devices;
  auto env_of = [](std::map<std::string, std::string> m) {
    return [m](const std::string& k) -> std::optional<std::string> {
      const auto it = m.find(k);
      return it == m.end() ? std::nullopt : std::optional<std::string>(it->second);
    };
  };
  const auto torchrun = env_of({{"RANK", "5"},
                                {"WORLD_SIZE", "8"},
                                {"LOCAL_RANK", "1"},
                                {"LOCAL_WORLD_SIZE", "4"},
                                {"MASTER_ADDR", "node0"},
                                {"MASTER_PORT", "29500"},
                                {"TORCHELASTIC_RUN_ID", "job7"}});
  TrainConfig c;
  c.device = "cuda";
  JobFlags f;
  f.timeout = 60;
  resolve_train_devices(c, f, torchrun);
  EXPECT_EQ(c.devices, std::vector<int>{1});  // LOCAL_RANK
  EXPECT_EQ(c.procs.rank, 5);
  EXPECT_EQ(c.procs.world_size, 8);
  EXPECT_EQ(c.procs.local_world_size, 4);
  EXPECT_EQ(c.procs.rendezvous, "tcp:node0:29501");  // MASTER_PORT + 1
  EXPECT_EQ(c.procs.job_tag, "job7");
  EXPECT_EQ(c.procs.timeout, 60);
  EXPECT_FALSE(c.is_rank0());
  EXPECT_NO_THROW(c.validate());
  c = TrainConfig{};
  c.device = "cuda:0";  // a launcher that gives each process its own CUDA_VISIBLE_DEVICES
  f.rendezvous = "file:/shared/kat-id";
  resolve_train_devices(c, f, torchrun);
  EXPECT_EQ(c.devices, std::vector<int>{0});
  EXPECT_EQ(c.procs.rendezvous, "file:/shared/kat-id");
  c.batch = 100;  // not divisible by 8 processes
  kat::test::expect_error([&] { c.validate(); }, {"--batch 100", "8 processes"});
  c = TrainConfig{};
  c.device = "cuda";
  f.rendezvous = "tcp::4000";
  resolve_train_devices(c, f,
                        env_of({{"SLURM_PROCID", "2"},
                                {"SLURM_NTASKS", "4"},
                                {"SLURM_LOCALID", "0"},
                                {"SLURM_NTASKS_PER_NODE", "2"},
                                {"SLURM_JOB_NODELIST", "gpu[07-08]"},
                                {"SLURM_JOB_ID", "123"}}));
  EXPECT_EQ(c.procs.rendezvous, "tcp:gpu07:4000");
  EXPECT_EQ(c.procs.job_tag, "123");
  EXPECT_EQ(c.devices, std::vector<int>{0});
  // No launcher: --device as before, a world of one, whatever the flags.
  for (const char* d : {"cpu", "cuda:0,1", "cuda:3"}) {
    TrainConfig one;
    one.device = d;
    resolve_train_devices(one, f, env_of({}));
    EXPECT_EQ(one.devices, cli::parse_devices(d));
    EXPECT_EQ(one.procs.world_size, 1);
    EXPECT_EQ(one.procs.rendezvous, "");
  }
  c = TrainConfig{};
  c.device = "cuda:0,1";
  kat::test::expect_error([&] { resolve_train_devices(c, f, torchrun); }, {"rank 5 of 8", "one GPU"});
  c.device = "cpu";
  kat::test::expect_error([&] { resolve_train_devices(c, f, torchrun); }, {"add --device cuda"});
  c.device = "cuda";
  f.rendezvous_timeout = 0;
  kat::test::expect_error([&] { resolve_train_devices(c, f, torchrun); }, {"--rendezvous-timeout"});
}

namespace {
// Two "processes" of a job in two threads on the CPU: all_reduce_sum adds both ranks' vectors in
// rank order (what NCCL's sum gives for two ranks: a + b) and hands the sum to both.
class TwoRankExchange {
 public:
  void sum(int rank, double* v, int n) {
    std::unique_lock<std::mutex> lk(mu_);
    const int round = round_;
    parts_[size_t(rank)].assign(v, v + n);
    if (++arrived_ == 2) {
      total_.assign(size_t(n), 0.0);
      for (const auto& p : parts_)
        for (int i = 0; i < n; ++i) total_[size_t(i)] += p.at(size_t(i));
      arrived_ = 0;
      ++round_;
      cv_.notify_all();
    } else {
      cv_.wait(lk, [&] { return round_ != round; });
    }
    std::copy(total_.begin(), total_.end(), v);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<double> parts_[2], total_;
  int arrived_ = 0, round_ = 0;
};

class RankEngine : public CpuEngine {
 public:
  RankEngine(KatModel& m, TwoRankExchange& x, int rank) : CpuEngine(m), x_(x), rank_(rank) {}
  void all_reduce_sum(double* v, int n) override { x_.sum(rank_, v, n); }
  int process_count() const override { return 2; }

 private:
  TwoRankExchange& x_;
  int rank_;
};
}  // namespace

// Evaluation split across the processes of a job (each its rows of every eval batch, counts and
// sums reduced) gives every process the one-process result: counts and the confusion matrix
// exactly, the mean loss up to fp32 rounding (see the bound's reason below).
TEST(TrainJob, SplitEvaluationEqualsTheWholeOne) {
  const ModelConfig mc = ModelConfig::load("kat_micro_patch4_28");
  const data::Dataset ds = kat::test::synthetic(37, mc.img_size, mc.img_size, mc.in_chans, 10, 9);
  TrainConfig tc;
  const data::LoaderConfig eval1 = data::LoaderConfig::eval(train_loader_config(tc, mc), 8);  // last batch: 5
  KatModel ref(mc);
  ref.init_params(4);
  CpuEngine one(ref);
  const EvalResult whole = evaluate(one, ds, eval1, false);
  TwoRankExchange x;
  std::vector<EvalResult> got(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r)
    ranks.emplace_back([&, r] {
      KatModel m(mc);
      m.params = ref.params;
      RankEngine e(m, x, r);
      TrainConfig t = tc;
      t.procs.world_size = 2;
      t.procs.rank = r;
      got[size_t(r)] = evaluate(e, ds, data::LoaderConfig::eval(train_loader_config(t, mc), 8), false);
    });
  for (auto& t : ranks) t.join();
  for (const EvalResult& g : got) {
    EXPECT_EQ(g.count, whole.count);
    EXPECT_EQ(g.top1, whole.top1);
    EXPECT_EQ(g.top5, whole.top5);
    EXPECT_EQ(g.confusion, whole.confusion);
    // Each rank runs its rows as a smaller batch, and OpenBLAS's sgemm may block and thread a GEMM
    // of other height differently: a sample's fp32 logits may differ in their last bits (seen
    // under the sanitizer build: 2.8e-9 relative in the mean loss), on top of the two partial sums'
    // order. 1e-6 relative is ~10 fp32 ulps of each loss: far below any real difference (a wrong
    // or missing row moves the mean of 37 losses by ~1e-2).
    EXPECT_NEAR(g.loss, whole.loss, 1e-6 * std::fabs(whole.loss));
  }
  EXPECT_EQ(got[0].loss, got[1].loss);  // the same reduced value on every process
}
