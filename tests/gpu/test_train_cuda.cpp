// `kat train --device cuda` end to end through kat::train (GpuRunner with the staged input
// pipeline: the next micro-batch uploads on a copy stream while the current one computes). A run
// stopped with --max-steps and resumed must give bitwise the losses and weights of a straight run,
// which it can only do if every micro-batch is computed on its own inputs in order (a slot
// overwritten too early, or a batch skipped or repeated across step and epoch boundaries, breaks
// it); the CPU test's run (gradient accumulation 2, mixing, RandAugment, erasing, EMA, clipping,
// evaluation between epochs).
// Data: Fashion-MNIST from Debian's path, or the directory in KAT_TEST_FMNIST (the GPU machine).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "../test_util.h"
#include "../train_run_util.h"
#include "kat/core/error.h"
#include "kat/core/rng.h"
#include "kat/data/dataset.h"
#include "kat/io/safetensors.h"
#include "kat/model/kat_model.h"
#include "kat/train/gpu_group.h"
#include "kat/train/gpu_runner.h"
#include "kat/train/trainer.h"
#include "model/kat_model_cuda.h"
#include "ops/cuda/device_memory.h"

namespace fs = std::filesystem;
using namespace kat;

namespace {
std::string fmnist_dir() {
  const char* e = std::getenv("KAT_TEST_FMNIST");
  return e && *e ? e : data::kFashionMnistDir;
}

// The CPU trainer test's run (tests/train_run_util.h) on the GPU, data from fmnist_dir().
TrainConfig tiny_gpu_run(const std::string& dir) {
  TrainConfig c = kat::test::tiny_run(dir);
  c.data = "fashion-mnist:" + fmnist_dir();
  c.device = "cuda";
  c.devices = {0};
  return c;
}
}  // namespace

TEST(TrainCuda, StagedUploadsResumeBitwise) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  if (!fs::exists(fmnist_dir() + "/train-images-idx3-ubyte.gz") &&
      !fs::exists(fmnist_dir() + "/train-images-idx3-ubyte"))
    GTEST_SKIP() << "Fashion-MNIST not found in " << fmnist_dir() << " (set KAT_TEST_FMNIST)";
  const std::string a = kat::test::temp_path("kat_gpu_resume_a");
  const std::string b = kat::test::temp_path("kat_gpu_resume_b");
  fs::remove_all(a);
  fs::remove_all(b);
  const auto r = kat::test::check_resume_bitwise(tiny_gpu_run(a), a, b);
  const TrainResult& full = r.full;
  for (double l : full.step_losses) EXPECT_TRUE(std::isfinite(l));
  fs::remove_all(a);
  fs::remove_all(b);
}

// The same with --precision fp8 (GpuGroup::enable_fp8): the amax history is saved in the checkpoint
// (fp8.amax_history, fp8.amax_seen, the CPU emulation's layout) and restored on resume, so the
// resumed run's delayed scales, losses and weights are bitwise the straight run's. FP8 GEMMs need
// compute capability 8.9+: skipped elsewhere.
TEST(TrainCuda, Fp8ResumeBitwise) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  int major = 0, minor = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
  if (major * 10 + minor < 89) GTEST_SKIP() << "FP8 needs compute capability 8.9+";
  if (!fs::exists(fmnist_dir() + "/train-images-idx3-ubyte.gz") &&
      !fs::exists(fmnist_dir() + "/train-images-idx3-ubyte"))
    GTEST_SKIP() << "Fashion-MNIST not found in " << fmnist_dir() << " (set KAT_TEST_FMNIST)";
  const std::string a = kat::test::temp_path("kat_gpu_fp8_resume_a");
  const std::string b = kat::test::temp_path("kat_gpu_fp8_resume_b");
  fs::remove_all(a);
  fs::remove_all(b);
  TrainConfig c = tiny_gpu_run(a);
  c.precision = "fp8";
  const auto r = kat::test::check_resume_bitwise(c, a, b);
  for (double l : r.full.step_losses) EXPECT_TRUE(std::isfinite(l));
  // The checkpoint holds the history, with every slot recorded once per micro-batch.
  const auto ck = io::SafetensorsFile::load(r.full.last_checkpoint);
  ASSERT_TRUE(ck.has("fp8.amax_history") && ck.has("fp8.amax_seen"));
  const std::vector<int64_t> seen = ck.to_i64("fp8.amax_seen");
  ASSERT_FALSE(seen.empty());
  for (int64_t s : seen) EXPECT_EQ(s, seen[0]);
  EXPECT_GT(seen[0], 0);
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
    GpuRunner g(cfg, 0, DType::BF16, AdamWConfig{}, B, true);
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
      EXPECT_THROW(g.stage(xs[2].data(), ts[2].data(), B), Error);                   // both slots taken
      EXPECT_THROW(g.accumulate(xs[2].data(), ts[2].data(), B, 1, nullptr), Error);  // staged first
    }
    return std::make_pair(losses, p);
  };
  const auto sync = run(false), staged = run(true);
  EXPECT_EQ(sync.first, staged.first);
  EXPECT_TRUE(sync.second == staged.second);
}

// A forward batch above the planned maximum (evaluation with --eval-batch larger than a training
// shard) runs in chunks of the plan, on training and inference runners alike, and gives the logits
// of a runner planned for the whole batch (to fp32 summation order: cuBLASLt may pick another
// kernel for another row count, so bitwise equality is not promised).
TEST(TrainCuda, ForwardAbovePlanRunsInChunks) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  ModelConfig cfg = ModelConfig::load("kat_micro_patch4_28");
  cfg.apply_override("depth=2");
  KatModel m(cfg);
  m.init_params(4);
  const int B = 21, K = cfg.num_classes;
  std::vector<float> x(size_t(B) * cfg.in_chans * cfg.img_size * cfg.img_size);
  Rng r(12);
  for (auto& v : x) v = float(r.normal());
  auto logits = [&](int plan, bool training) {
    GpuRunner g(cfg, 0, DType::F32, AdamWConfig{}, plan, training);
    g.upload_params(m.params.data());
    const float* z = g.logits(x.data(), B);
    if (plan < B) EXPECT_THROW(g.forward(nullptr, B, nullptr), Error);  // cannot reuse a chunked batch
    return std::vector<float>(z, z + size_t(B) * K);
  };
  const auto whole = logits(B, false), chunked = logits(8, false), chunked_train = logits(8, true);
  for (size_t i = 0; i < whole.size(); ++i) {
    ASSERT_TRUE(std::isfinite(chunked[i]) && std::isfinite(chunked_train[i])) << i;
    EXPECT_NEAR(chunked[i], whole[i], 1e-4f * (1 + std::fabs(whole[i]))) << i;
    EXPECT_NEAR(chunked_train[i], whole[i], 1e-4f * (1 + std::fabs(whole[i]))) << i;
  }
}

// The bf16 runner uploads images as bf16 (converted on the host while copying into the pinned
// slot): the logits must be bitwise those of the model fed the fp32 images on the device (its
// patch embedding rounds to bf16 the same way). Inputs not representable in bf16, so rounding
// happens, plus a NaN-free tie case (an exact halfway value) in every image.
TEST(TrainCuda, Bf16UploadEqualsF32Input) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  ModelConfig cfg = ModelConfig::load("kat_micro_patch4_28");
  cfg.apply_override("depth=2");
  KatModel m(cfg);
  m.init_params(8);
  const int B = 6, K = cfg.num_classes;
  const size_t per = size_t(cfg.in_chans) * cfg.img_size * cfg.img_size;
  std::vector<float> x(B * per);
  Rng r(31);
  for (auto& v : x) v = float(r.normal());
  for (int b = 0; b < B; ++b) x[b * per] = 1.0f + 1.0f / 256;  // halfway between two bf16 values: ties to even
  GpuRunner g(cfg, 0, DType::BF16, AdamWConfig{}, B, false);
  g.upload_params(m.params.data());
  const float* z = g.logits(x.data(), B);
  const std::vector<float> via_bf16(z, z + size_t(B) * K);

  KatModelCuda km(cfg, DType::BF16, nullptr);
  km.plan(B, false);
  km.upload_params(m.params.data());
  cuda::DeviceBuffer<float> dimg(x.size());
  ASSERT_EQ(cudaMemcpy(dimg.data(), x.data(), dimg.bytes(), cudaMemcpyHostToDevice), cudaSuccess);
  km.forward(dimg.data(), B, false);
  std::vector<float> via_f32(size_t(B) * K);
  km.download_logits(via_f32.data());
  for (float v : via_bf16) ASSERT_TRUE(std::isfinite(v));
  EXPECT_TRUE(via_bf16 == via_f32) << "bf16 upload changed the logits";
}

// A batch that cannot fit is refused at plan time with the sizes and what to change.
TEST(TrainCuda, OversizedBatchNamesTheFix) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  const ModelConfig cfg = ModelConfig::load("kat_base_patch16_224");
  kat::test::expect_error([&] { GpuRunner g(cfg, 0, DType::BF16, AdamWConfig{}, 200000, true); },  // ~100 TB
                          {"kat_base_patch16_224 at batch 200000", "MiB free", "lower --batch"});
}

// Data parallel over two GPUs (skipped with fewer): the replicas stay bitwise identical, the
// losses and weights follow the one-GPU run (same global batches; the sums differ in order and in
// GEMM shapes, so only to bf16-level tolerances), and a stopped-and-resumed two-GPU `kat train`
// gives bitwise the straight run.
TEST(TrainCuda, DataParallelTwoGpus) {
  int n = 0;
  if (!cuda_available() || cudaGetDeviceCount(&n) != cudaSuccess || n < 2) GTEST_SKIP() << "needs 2 GPUs";
  ModelConfig cfg = ModelConfig::load("kat_micro_patch4_28");
  cfg.apply_override("depth=2");
  cfg.apply_override("drop_path_rate=0");
  KatModel m(cfg);
  m.init_params(5);
  const int B = 16, K = cfg.num_classes, steps = 4;
  const size_t ni = size_t(B) * cfg.in_chans * cfg.img_size * cfg.img_size;
  std::vector<std::vector<float>> xs(steps, std::vector<float>(ni)),
      ts(steps, std::vector<float>(size_t(B) * K, 0.f));
  Rng r(21);
  for (int i = 0; i < steps; ++i) {
    for (auto& v : xs[size_t(i)]) v = float(r.normal());
    for (int b = 0; b < B; ++b) ts[size_t(i)][size_t(b) * K + (3 * b + i) % K] = 1.f;
  }
  auto run = [&](const std::vector<int>& devs, std::vector<std::vector<float>>* replicas) {
    GpuGroup g(cfg, devs, AdamWConfig{}, B);
    g.upload_params(m.params.data());
    std::vector<double> losses;
    for (int i = 0; i < steps; ++i) {
      g.begin_step();
      g.stage(xs[size_t(i)].data(), ts[size_t(i)].data(), B);
      g.compute_staged(1, nullptr);
      losses.push_back(g.staged_loss());
      g.finish_step(1e-3, 1.0);
    }
    for (int k = 0; replicas && k < g.size(); ++k) {
      replicas->emplace_back(m.params.size());
      g.replica(k).download_params(replicas->back().data());
    }
    return losses;
  };
  std::vector<std::vector<float>> one, two;
  const auto l1 = run({0}, &one), l2 = run({0, 1}, &two);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_TRUE(two[0] == two[1]) << "replicas diverged";
  for (int i = 0; i < steps; ++i) EXPECT_NEAR(l2[size_t(i)], l1[size_t(i)], 2e-2 * std::fabs(l1[size_t(i)])) << i;
  double num = 0, den = 0;
  for (size_t k = 0; k < one[0].size(); ++k) {
    num += double(two[0][k] - one[0][k]) * (two[0][k] - one[0][k]);
    den += double(one[0][k]) * one[0][k];
  }
  EXPECT_LE(std::sqrt(num / den), 1e-2);

  if (!fs::exists(fmnist_dir() + "/train-images-idx3-ubyte.gz") &&
      !fs::exists(fmnist_dir() + "/train-images-idx3-ubyte"))
    GTEST_SKIP() << "Fashion-MNIST not found in " << fmnist_dir() << " (set KAT_TEST_FMNIST)";
  const std::string a = kat::test::temp_path("kat_gpu2_resume_a");
  const std::string b = kat::test::temp_path("kat_gpu2_resume_b");
  fs::remove_all(a);
  fs::remove_all(b);
  TrainConfig c = tiny_gpu_run(a);
  c.device = "cuda:0,1";
  c.devices = {0, 1};
  kat::test::check_resume_bitwise(c, a, b);
  fs::remove_all(a);
  fs::remove_all(b);
}
