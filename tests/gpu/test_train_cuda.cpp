// `kat train --device cuda` end to end through kat::train (GpuRunner with the staged input
// pipeline: the next micro-batch uploads on a copy stream while the current one computes). A run
// stopped with --max-steps and resumed must give bitwise the losses and weights of a straight run,
// which it can only do if every micro-batch is computed on its own inputs in order (a slot
// overwritten too early, or a batch skipped or repeated across step and epoch boundaries, breaks
// it); gradient accumulation 2, EMA, clipping and evaluation between epochs are on.
// Data: Fashion-MNIST from Debian's path, or the directory in KAT_TEST_FMNIST (the GPU machine).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "model/kat_model.h"
#include "io/safetensors.h"
#include "train/gpu_runner.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace kat;

namespace {
std::string fmnist_dir() {
  const char* e = std::getenv("KAT_TEST_FMNIST");
  return e && *e ? e : data::kFashionMnistDir;
}

TrainConfig tiny_gpu_run(const std::string& dir) {
  TrainConfig c;
  c.model = "kat_micro_patch4_28";
  c.model_overrides = {"depth=2", "embed_dim=32", "num_heads=2", "mlp_hidden=64"};
  c.data = "fashion-mnist:" + fmnist_dir();
  c.device = "cuda";
  c.out_dir = dir;
  c.epochs = 2;
  c.batch = 32;
  c.accum_steps = 2;
  c.train_subset = 384;  // 6 steps of 2 micro-batches per epoch
  c.test_subset = 64;
  c.warmup_epochs = 0.5;
  c.mixup = 0.8;
  c.drop_path = 0.1;
  c.ema_decay = 0.9;
  c.clip_grad = 1.0;
  c.progress = false;
  c.workers = 2;
  c.seed = 11;
  return c;
}
}  // namespace

TEST(TrainCuda, StagedUploadsResumeBitwise) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  if (!fs::exists(fmnist_dir() + "/train-images-idx3-ubyte.gz") && !fs::exists(fmnist_dir() + "/train-images-idx3-ubyte"))
    GTEST_SKIP() << "Fashion-MNIST not found in " << fmnist_dir() << " (set KAT_TEST_FMNIST)";
  const std::string a = (fs::temp_directory_path() / "kat_gpu_resume_a").string();
  const std::string b = (fs::temp_directory_path() / "kat_gpu_resume_b").string();
  fs::remove_all(a);
  fs::remove_all(b);
  const TrainResult full = train(tiny_gpu_run(a));
  ASSERT_EQ(full.steps, 12);
  TrainConfig cb = tiny_gpu_run(b);
  cb.max_steps = 4;  // stops mid-epoch 1 with the next micro-batch already staged
  const TrainResult first = train(cb);
  ASSERT_TRUE(first.interrupted);
  const TrainResult rest = train(tiny_gpu_run(b), b);
  ASSERT_EQ(rest.steps, 12);
  std::vector<double> joined = first.step_losses;
  joined.insert(joined.end(), rest.step_losses.begin(), rest.step_losses.end());
  ASSERT_EQ(joined.size(), full.step_losses.size());
  for (size_t i = 0; i < joined.size(); ++i) {
    EXPECT_TRUE(std::isfinite(full.step_losses[i]));
    EXPECT_EQ(joined[i], full.step_losses[i]) << "step " << i + 1;
  }
  EXPECT_EQ(rest.final_top1, full.final_top1);
  EXPECT_EQ(rest.final_ema_top1, full.final_ema_top1);
  const auto fa = io::SafetensorsFile::load(full.last_checkpoint), fb = io::SafetensorsFile::load(rest.last_checkpoint);
  for (const auto& n : fa.names()) EXPECT_EQ(fa.to_f32(n), fb.to_f32(n)) << n;
  // It learned something in 12 steps (loss of the last step below the first).
  EXPECT_LT(full.step_losses.back(), full.step_losses.front());
  fs::remove_all(a);
  fs::remove_all(b);
}

// The synchronous and the staged entry points agree bitwise on the same batches, and misuse is
// an error that names the call.
TEST(TrainCuda, GpuRunnerStagedEqualsSynchronous) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  ModelConfig cfg = ModelConfig::load("kat_micro_patch4_28");
  cfg.apply_override("depth=2");
  KatModel m(cfg);
  m.init_params(3);
  const int B = 8, K = cfg.num_classes;
  const size_t ni = size_t(B) * cfg.in_chans * cfg.img_size * cfg.img_size;
  std::vector<std::vector<float>> xs(3, std::vector<float>(ni)), ts(3, std::vector<float>(size_t(B) * K, 0.f));
  Rng r(9);
  for (int i = 0; i < 3; ++i) {
    for (auto& v : xs[i]) v = float(r.normal());
    for (int b = 0; b < B; ++b) ts[i][size_t(b) * K + (b + i) % K] = 1.f;
  }
  auto run = [&](bool staged) {
    GpuRunner g(cfg, 0, true, AdamWConfig{}, B, true);
    g.upload_params(m.params.data());
    std::vector<double> losses;
    if (staged) g.stage(xs[0].data(), ts[0].data(), B);
    for (int i = 0; i < 3; ++i) {
      Rng dp(100 + i);
      g.begin_step();
      if (staged) {
        g.compute_staged(1, &dp);
        if (i + 1 < 3) g.stage(xs[i + 1].data(), ts[i + 1].data(), B);
        losses.push_back(g.staged_loss());
      } else {
        losses.push_back(g.accumulate(xs[i].data(), ts[i].data(), B, 1, &dp));
      }
      g.finish_step(1e-3, 0.0);
    }
    std::vector<float> p(m.params.size());
    g.download_params(p.data());
    if (staged) {
      EXPECT_THROW(g.compute_staged(1, nullptr), Error);  // nothing staged
      g.stage(xs[0].data(), ts[0].data(), B);
      g.stage(xs[1].data(), ts[1].data(), B);
      EXPECT_THROW(g.stage(xs[2].data(), ts[2].data(), B), Error);  // both slots taken
      EXPECT_THROW(g.accumulate(xs[2].data(), ts[2].data(), B, 1, nullptr), Error);  // staged first
    }
    return std::make_pair(losses, p);
  };
  const auto sync = run(false), staged = run(true);
  EXPECT_EQ(sync.first, staged.first);
  EXPECT_TRUE(sync.second == staged.second);
}
