// `kat train --device cuda` end to end through kat::train (GpuRunner with the staged input
// pipeline: the next micro-batch uploads on a copy stream while the current one computes). A run
// stopped with --max-steps and resumed must give bitwise the losses and weights of a straight run,
// which it can only do if every micro-batch is computed on its own inputs in order (a slot
// overwritten too early, or a batch skipped or repeated across step and epoch boundaries, breaks
// it); the CPU test's run (gradient accumulation 2, mixing, RandAugment, erasing, EMA, clipping,
// evaluation between epochs).
// Data: Fashion-MNIST from Debian's path, or the directory in KAT_TEST_FMNIST (the GPU machine).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "../train_run_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "io/safetensors.h"
#include "model/kat_model.h"
#include "train/gpu_runner.h"
#include "train/trainer.h"

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
  return c;
}
}  // namespace

TEST(TrainCuda, StagedUploadsResumeBitwise) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  if (!fs::exists(fmnist_dir() + "/train-images-idx3-ubyte.gz") &&
      !fs::exists(fmnist_dir() + "/train-images-idx3-ubyte"))
    GTEST_SKIP() << "Fashion-MNIST not found in " << fmnist_dir() << " (set KAT_TEST_FMNIST)";
  const std::string a = (fs::temp_directory_path() / "kat_gpu_resume_a").string();
  const std::string b = (fs::temp_directory_path() / "kat_gpu_resume_b").string();
  fs::remove_all(a);
  fs::remove_all(b);
  const auto r = kat::test::check_resume_bitwise(tiny_gpu_run(a), a, b);
  const TrainResult& full = r.full;
  for (double l : full.step_losses) EXPECT_TRUE(std::isfinite(l));
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
  std::vector<std::vector<float>> xs(3, std::vector<float>(ni)),
      ts(3, std::vector<float>(size_t(B) * K, 0.f));
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
      EXPECT_THROW(g.stage(xs[2].data(), ts[2].data(), B), Error);                   // both slots taken
      EXPECT_THROW(g.accumulate(xs[2].data(), ts[2].data(), B, 1, nullptr), Error);  // staged first
    }
    return std::make_pair(losses, p);
  };
  const auto sync = run(false), staged = run(true);
  EXPECT_EQ(sync.first, staged.first);
  EXPECT_TRUE(sync.second == staged.second);
}

// A batch that cannot fit is refused at plan time with the sizes and what to change.
TEST(TrainCuda, OversizedBatchNamesTheFix) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  const ModelConfig cfg = ModelConfig::load("kat_base_patch16_224");
  try {
    GpuRunner g(cfg, 0, true, AdamWConfig{}, 200000, true);  // ~100 TB of activations
    FAIL() << "planned a 200000-image kat_base batch";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("kat_base_patch16_224 at batch 200000"), std::string::npos) << m;
    EXPECT_NE(m.find("MiB free"), std::string::npos) << m;
    EXPECT_NE(m.find("lower --batch"), std::string::npos) << m;
  }
}
