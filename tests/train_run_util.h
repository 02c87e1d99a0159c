// Shared by the CPU trainer test (tests/test_train.cpp) and the GPU one (tests/gpu/test_train_cuda.cpp):
// a small, fully featured training run on a slice of Fashion-MNIST, and the bitwise-resume check.
#pragma once
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kat/io/safetensors.h"
#include "kat/train/trainer.h"

namespace kat::test {

// kat_micro with 2 blocks, 2 epochs of 6 steps (batch 32 x accum 2 over 384 images), the whole
// recipe on: warm-up, mixup/cutmix, drop-path, EMA, clipping, RandAugment, random erasing.
inline TrainConfig tiny_run(const std::string& dir) {
  TrainConfig c;
  c.model = "kat_micro_patch4_28";
  c.model_overrides = {"depth=2", "embed_dim=32", "num_heads=2", "mlp_hidden=64"};
  c.out_dir = dir;
  c.epochs = 2;
  c.batch = 32;
  c.accum_steps = 2;
  c.train_subset = 384;  // 6 steps per epoch
  c.test_subset = 64;
  c.warmup_epochs = 0.5;
  c.mixup = 0.8;
  c.cutmix = 1.0;
  c.drop_path = 0.1;
  c.ema_decay = 0.9;
  c.clip_grad = 1.0;
  c.randaug_n = 1;
  c.random_erase = 0.25;
  c.progress = false;
  c.workers = 2;
  c.seed = 7;
  return c;
}

struct ResumeCheck {
  TrainResult full, first, rest;
};

// Trains `cfg` straight through into dir_a, and into dir_b stopped after 4 steps (--max-steps)
// and resumed; the joined losses, final accuracies and final weights must be bitwise equal.
inline ResumeCheck check_resume_bitwise(TrainConfig cfg, const std::string& dir_a, const std::string& dir_b) {
  ResumeCheck r;
  cfg.out_dir = dir_a;
  r.full = train(cfg);
  EXPECT_EQ(r.full.steps, 12);
  TrainConfig cb = cfg;
  cb.out_dir = dir_b;
  cb.max_steps = 4;  // "killed" mid-epoch 1, checkpoint written
  r.first = train(cb);
  EXPECT_TRUE(r.first.interrupted);
  EXPECT_EQ(r.first.steps, 4);
  cb.max_steps = 0;
  r.rest = train(cb, dir_b);
  EXPECT_EQ(r.rest.steps, 12);
  std::vector<double> joined = r.first.step_losses;
  joined.insert(joined.end(), r.rest.step_losses.begin(), r.rest.step_losses.end());
  EXPECT_EQ(joined.size(), r.full.step_losses.size());
  for (size_t i = 0; i < joined.size() && i < r.full.step_losses.size(); ++i)
    EXPECT_EQ(joined[i], r.full.step_losses[i]) << "step " << i + 1;
  EXPECT_EQ(r.rest.final_top1, r.full.final_top1);
  EXPECT_EQ(r.rest.final_ema_top1, r.full.final_ema_top1);
  const auto fa = io::SafetensorsFile::load(r.full.last_checkpoint);
  const auto fb = io::SafetensorsFile::load(r.rest.last_checkpoint);
  for (const auto& n : fa.names()) EXPECT_EQ(fa.to_f32(n), fb.to_f32(n)) << n;
  return r;
}

}  // namespace kat::test
