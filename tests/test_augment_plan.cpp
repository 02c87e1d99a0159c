// Plan / apply split of the augmentation (data/augment_plan.h): plan_sample() draws exactly the
// decisions the CPU loader makes, and applying a plan reproduces the loader's batches bit for bit
// (what the GPU augmenter relies on: it applies the same plans).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "data/augment_math.h"
#include "data/augment_plan.h"
#include "kat/core/rng.h"
#include "kat/data/data.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace kat;
using namespace kat::data;
using kat::test::expect_error;

namespace {

fs::path temp_dir(const char* name) {
  const fs::path p = fs::temp_directory_path() / ("kat_plan_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

void random_image(Rng& r, std::vector<uint8_t>& img, int h, int w, int c) {
  img.resize(static_cast<size_t>(h) * w * c);
  const int lo = static_cast<int>(r.below(128)), span = 1 + static_cast<int>(r.below(256 - lo));
  for (auto& v : img) v = static_cast<uint8_t>(lo + r.below(static_cast<uint64_t>(span)));
}

// A random training (or eval) config valid for h x w x c images.
AugmentConfig random_config(Rng& r, int h, int w) {
  AugmentConfig a;
  a.train = r.below(5) != 0;
  a.out_size = r.below(3) == 0 ? 0 : 4 + static_cast<int>(r.below(40));
  const char* crops[] = {"none", "pad", "rrc"};
  a.crop = crops[r.below(3)];
  a.padding = static_cast<int>(r.below(5));
  a.pad_mode = r.below(2) ? "zero" : "reflect";
  if (a.padding >= std::min(h, w)) a.padding = std::min(h, w) - 1;
  a.rrc_scale_min = 0.05 + 0.5 * r.uniform();
  a.rrc_scale_max = std::min(1.0, a.rrc_scale_min + r.uniform());
  a.eval_crop_pct = r.below(2) ? 1.0 : 0.6 + 0.4 * r.uniform();
  a.hflip = r.below(2);
  a.randaug_n = static_cast<int>(r.below(4));
  a.randaug_m = 12 * r.uniform();
  a.randaug_mstd = r.below(2) ? 0 : r.uniform();
  a.randaug_p = r.below(2) ? 1.0 : r.uniform();
  a.fill = static_cast<int>(r.below(256));
  a.random_erase = r.below(2) ? 0 : 0.3 + 0.7 * r.uniform();
  if (a.crop == "rrc" && h != w && a.out_size == 0) a.out_size = 12;
  return a;
}

}  // namespace

// augment_image (plan drawn from the caller's rng, then applied) and a plan drawn from a copy of the
// same rng and applied with apply_augment give the same bits; the plan's erasing rectangle is where
// erasing changed the image, and nothing else differs.
TEST(AugmentPlan, ApplyAugmentEqualsAugmentImage) {
  Rng r(2024);
  std::vector<uint8_t> img;
  AugScratch s;
  int erased = 0, cases = 0;
  for (int it = 0; it < 600; ++it) {
    const int c = r.below(2) ? 3 : 1;
    const int h = 5 + static_cast<int>(r.below(40)), w = r.below(3) ? h : 5 + static_cast<int>(r.below(40));
    random_image(r, img, h, w, c);
    const AugmentConfig a = random_config(r, h, w);
    validate(a, h, w, c);
    const auto lut = make_norm_lut(a, c);
    const int oh = aug_out_h(a, h), ow = aug_out_w(a, w);
    const size_t np = static_cast<size_t>(oh) * ow;
    std::vector<float> want(c * np, std::nanf("")), got(c * np, std::nanf("")), plain(c * np, std::nanf(""));
    const uint64_t seed = r.next_u64();
    Rng r1(seed), r2(seed);
    augment_image(img.data(), h, w, c, a, lut.data(), r1, s, want.data());
    SamplePlan p;
    plan_augment(a, r2, h, w, c, p);
    ASSERT_EQ(p.out_h, oh);
    ASSERT_EQ(p.out_w, ow);
    apply_augment(img.data(), p, a, lut.data(), s, got.data());
    ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float))) << "case " << it;
    ++cases;
    if (!p.erase) continue;
    ++erased;
    ASSERT_TRUE(p.train);
    ASSERT_GT(p.erase_h, 0);
    ASSERT_GT(p.erase_w, 0);
    ASSERT_LE(p.erase_top + p.erase_h, oh);
    ASSERT_LE(p.erase_left + p.erase_w, ow);
    SamplePlan q = p;
    q.erase = false;
    apply_augment(img.data(), q, a, lut.data(), s, plain.data());
    for (int k = 0; k < c; ++k)
      for (int y = 0; y < oh; ++y)
        for (int x = 0; x < ow; ++x) {
          const size_t o = k * np + static_cast<size_t>(y) * ow + x;
          const bool inside =
              y >= p.erase_top && y < p.erase_top + p.erase_h && x >= p.erase_left && x < p.erase_left + p.erase_w;
          if (!inside) ASSERT_EQ(plain[o], got[o]) << "erasing changed a pixel outside its rectangle";
        }
  }
  EXPECT_EQ(cases, 600);
  EXPECT_GT(erased, 50);  // the erasing branch was exercised
}

// The decisions a plan records are the draws of the CPU: the flip and crop move the pixels as
// recorded (a plan with the flip toggled gives the mirror image of the crop).
TEST(AugmentPlan, FlipAndRandAugmentDecisionsAreTheOnesApplied) {
  Rng r(7);
  std::vector<uint8_t> img;
  random_image(r, img, 24, 24, 3);
  AugmentConfig a;
  a.crop = "rrc";
  a.out_size = 16;
  a.hflip = true;
  const auto lut = make_norm_lut(a, 3);
  AugScratch s;
  std::vector<float> o1(3 * 256), o2(3 * 256);
  for (int seed = 0; seed < 20; ++seed) {
    Rng rng(seed);
    SamplePlan p;
    plan_augment(a, rng, 24, 24, 3, p);
    apply_augment(img.data(), p, a, lut.data(), s, o1.data());
    p.flip = !p.flip;
    apply_augment(img.data(), p, a, lut.data(), s, o2.data());
    for (int k = 0; k < 3; ++k)
      for (int y = 0; y < 16; ++y)
        for (int x = 0; x < 16; ++x) ASSERT_EQ(o1[k * 256 + y * 16 + x], o2[k * 256 + y * 16 + 15 - x]);
  }
  // RandAugment: every step's op comes from the channel-appropriate list; signs only on signed ops.
  a.randaug_n = 16;
  a.randaug_p = 0.5;
  int applied = 0;
  for (int seed = 0; seed < 50; ++seed) {
    Rng rng(seed);
    SamplePlan p;
    plan_augment(a, rng, 24, 24, 1, p);
    ASSERT_EQ(p.randaug_steps, 16);
    for (int i = 0; i < 16; ++i) {
      const auto& ops = randaug_ops(1);
      EXPECT_NE(std::find(ops.begin(), ops.end(), p.randaug[i].op), ops.end());
      if (!p.randaug[i].applied || !randaug_signed(p.randaug[i].op)) EXPECT_EQ(p.randaug[i].sign, 1.0);
      if (p.randaug[i].applied) {
        ++applied;
        EXPECT_GE(p.randaug[i].magnitude, 0.0);
        EXPECT_LE(p.randaug[i].magnitude, 10.0);
      }
    }
  }
  EXPECT_GT(applied, 200);  // about half of 800
  EXPECT_LT(applied, 600);
}

// plan_mix draws what mix_batch draws (same result, same stream position); mix_batch = plan_mix +
// apply_mix + mix_targets.
TEST(AugmentPlan, PlanMixMatchesMixBatch) {
  Rng r(11);
  int applied = 0, cut = 0;
  for (int it = 0; it < 400; ++it) {
    MixConfig m;
    m.mixup_alpha = r.below(3) == 0 ? 0 : 0.2 + r.uniform();
    m.cutmix_alpha = r.below(3) == 0 ? 0 : 0.2 + r.uniform();
    m.prob = r.below(2) ? 1.0 : r.uniform();
    m.label_smoothing = r.below(2) ? 0 : 0.2 * r.uniform();
    const int n = 1 + static_cast<int>(r.below(7)), h = 1 + static_cast<int>(r.below(12)),
              w = 1 + static_cast<int>(r.below(12)), classes = 1 + static_cast<int>(r.below(6));
    std::vector<float> im(static_cast<size_t>(n) * 2 * h * w), targets(static_cast<size_t>(n) * classes);
    for (auto& v : im) v = static_cast<float>(r.uniform());
    std::vector<int32_t> labels(n);
    for (auto& l : labels) l = static_cast<int32_t>(r.below(static_cast<uint64_t>(classes)));
    const uint64_t seed = r.next_u64();
    Rng r1(seed), r2(seed);
    const MixResult a = mix_batch(m, r1, im.data(), n, 2, h, w, labels.data(), classes, targets.data());
    const MixResult b = plan_mix(m, r2, n, h, w);
    ASSERT_EQ(a.lam, b.lam);
    ASSERT_EQ(a.applied, b.applied);
    ASSERT_EQ(a.cutmix, b.cutmix);
    ASSERT_EQ(a.y0, b.y0);
    ASSERT_EQ(a.y1, b.y1);
    ASSERT_EQ(a.x0, b.x0);
    ASSERT_EQ(a.x1, b.x1);
    ASSERT_EQ(r1.state0(), r2.state0());
    ASSERT_EQ(r1.state1(), r2.state1());
    applied += a.applied;
    cut += a.applied && a.cutmix;
  }
  EXPECT_GT(applied, 100);
  EXPECT_GT(cut, 30);
}

// apply_plan(plan_sample(...)) on each file's full decode reproduces make_batch's images and
// targets bit for bit: in-memory datasets, lazy folders cropped from the original (RandomResizedCrop),
// lazy folders with the training fit and with the eval fit, gray files in an RGB dataset and back.
// (PNG files: a JPEG's lazy training fit may decode at a reduced DCT scale, which apply_plan's full
// decode does not.)
TEST(AugmentPlan, ApplyPlanEqualsMakeBatch) {
  const fs::path root = temp_dir("make_batch");
  Rng r(5);
  std::vector<uint8_t> img;
  for (int k = 0; k < 2; ++k) fs::create_directories(root / ("c" + std::to_string(k)));
  for (int j = 0; j < 10; ++j) {
    const int c = j % 3 == 0 ? 1 : 3, h = 14 + static_cast<int>(r.below(40)),
              w = 14 + static_cast<int>(r.below(40));
    random_image(r, img, h, w, c);
    write_png((root / ("c" + std::to_string(j % 2)) / ("i" + std::to_string(j) + ".png")).string(), h, w, c,
              img.data());
  }
  struct Setup {
    bool lazy;
    double eval_crop_pct;
    int channels;
    std::string crop;
    bool train;
  };
  const std::vector<Setup> setups = {
      {true, 0.0, 3, "rrc", true},  {true, 0.0, 1, "rrc", true},     {true, 0.0, 3, "pad", true},
      {true, 0.0, 3, "none", true}, {true, 0.875, 3, "none", false}, {true, 0.875, 1, "none", false},
      {false, 0.0, 3, "rrc", true}, {false, 0.0, 1, "pad", true},    {false, 0.9, 3, "none", false},
      {true, 0.0, 3, "rrc", false},
  };
  int compared = 0;
  for (const Setup& su : setups) {
    const int size = 12;
    const Dataset ds =
        load_image_folder(root.string(), size, false, nullptr, su.channels, nullptr, su.lazy, su.eval_crop_pct);
    LoaderConfig cfg;
    cfg.batch_size = 4;
    cfg.seed = r.next_u64();
    cfg.aug.crop = su.crop;
    cfg.aug.out_size = 10;
    cfg.aug.hflip = true;
    cfg.aug.randaug_n = 2;
    cfg.aug.random_erase = 0.5;
    cfg.mix.mixup_alpha = 0.8;
    cfg.mix.cutmix_alpha = 1.0;
    cfg.mix.label_smoothing = 0.1;
    if (!su.train) cfg = LoaderConfig::eval(cfg);
    validate(cfg.aug, ds.height, ds.width, ds.channels);
    const auto lut = make_norm_lut(cfg.aug, ds.channels);
    const int64_t epoch = 2;
    const auto order = epoch_order(ds.size(), cfg.seed, epoch, cfg.shuffle);
    Batch b;
    AugScratch s;
    for (int64_t bi = 0; bi * cfg.batch_size < static_cast<int64_t>(ds.size()); ++bi) {
      make_batch(ds, cfg, epoch, bi, order, b);
      const size_t per = static_cast<size_t>(b.c) * b.h * b.w;
      std::vector<float> images(per * b.n, std::nanf(""));
      for (int i = 0; i < b.n; ++i) {
        const int64_t idx = b.indices[i];
        int h = 0, w = 0, c = 0;
        std::vector<uint8_t> px;
        if (ds.lazy()) {
          ASSERT_TRUE(decode_image_file(ds.files[static_cast<size_t>(idx)], h, w, c, px));
        } else {
          h = ds.height;
          w = ds.width;
          c = ds.channels;
          px.assign(ds.image(static_cast<size_t>(idx)), ds.image(static_cast<size_t>(idx)) + ds.image_bytes());
        }
        const SamplePlan p = plan_sample(cfg, ds, epoch, idx, h, w, c);
        ASSERT_EQ(p.aug_c, ds.channels);
        ASSERT_EQ(p.out_h, b.h);
        ASSERT_EQ(p.out_w, b.w);
        apply_plan(px.data(), p, cfg.aug, lut.data(), s, images.data() + per * i);
      }
      const MixResult m = plan_batch_mix(cfg, epoch, bi, b.n, b.h, b.w);
      ASSERT_EQ(m.lam, b.mix.lam);
      ASSERT_EQ(m.applied, b.mix.applied);
      apply_mix(m, images.data(), b.n, b.c, b.h, b.w);
      std::vector<float> targets(static_cast<size_t>(b.n) * b.classes, std::nanf(""));
      mix_targets(batch_mix_config(cfg), m, b.labels.data(), b.n, b.classes, targets.data());
      ASSERT_EQ(0, std::memcmp(images.data(), b.images.data(), images.size() * sizeof(float)))
          << "lazy " << su.lazy << " crop " << su.crop << " train " << su.train << " batch " << bi;
      ASSERT_EQ(0, std::memcmp(targets.data(), b.targets.data(), targets.size() * sizeof(float)));
      compared += b.n;
    }
  }
  EXPECT_EQ(compared, 10 * static_cast<int>(setups.size()));
  fs::remove_all(root);
}

// The plan records the fit the loader applies, and bad sizes are refused naming the dataset.
TEST(AugmentPlan, PlanSampleFitAndErrors) {
  Dataset eager;
  eager.height = eager.width = 8;
  eager.channels = 1;
  eager.num_classes = 2;
  eager.labels = {0, 1};
  eager.pixels.assign(2 * 64, 7);
  eager.source = "my-dataset";
  LoaderConfig cfg;
  cfg.aug.crop = "rrc";
  cfg.aug.out_size = 6;
  const SamplePlan p = plan_sample(cfg, eager, 0, 1, 8, 8, 1);
  EXPECT_EQ(p.fit, SamplePlan::Fit::None);
  EXPECT_EQ(p.crop, SamplePlan::Crop::Rrc);
  EXPECT_EQ(p.aug_h, 8);
  EXPECT_EQ(p.out_h, 6);
  expect_error([&] { plan_sample(cfg, eager, 0, 1, 9, 8, 1); }, {"my-dataset", "9x8", "8x8"});
  expect_error([&] { plan_sample(cfg, eager, 0, 2, 8, 8, 1); }, {"my-dataset", "index 2"});
  expect_error([&] { plan_sample(cfg, eager, 0, 0, 8, 8, 2); }, {"my-dataset", "1 or 3 channels"});
  Dataset lazy = eager;
  lazy.pixels.clear();
  lazy.files = {"a.png", "b.png"};
  lazy.decode_size = 8;
  EXPECT_EQ(plan_sample(cfg, lazy, 0, 0, 30, 50, 3).fit, SamplePlan::Fit::None);  // RRC from the original
  EXPECT_EQ(plan_sample(cfg, lazy, 0, 0, 30, 50, 3).aug_w, 50);
  cfg.aug.crop = "pad";
  const SamplePlan tf = plan_sample(cfg, lazy, 0, 0, 30, 50, 3);
  EXPECT_EQ(tf.fit, SamplePlan::Fit::TrainFit);
  EXPECT_EQ(tf.aug_w, 8);
  lazy.eval_crop_pct = 0.875;
  EXPECT_EQ(plan_sample(cfg, lazy, 0, 0, 30, 50, 3).fit, SamplePlan::Fit::EvalFit);
  EXPECT_EQ(plan_sample(cfg, lazy, 0, 0, 8, 8, 3).fit, SamplePlan::Fit::None);  // already the model's size
  // Same arguments, same plan; another epoch, other decisions.
  cfg.aug.crop = "rrc";
  cfg.aug.hflip = true;
  cfg.aug.randaug_n = 2;
  lazy.eval_crop_pct = 0;
  int differ = 0;
  for (int e = 0; e < 10; ++e) {
    const SamplePlan a = plan_sample(cfg, lazy, e, 1, 30, 50, 3), b = plan_sample(cfg, lazy, e, 1, 30, 50, 3);
    EXPECT_EQ(std::memcmp(&a.box_y, &b.box_y, sizeof(int) * 4), 0);
    EXPECT_EQ(a.noise_seed, b.noise_seed);
    const SamplePlan c = plan_sample(cfg, lazy, e + 1, 1, 30, 50, 3);
    differ += a.box_x != c.box_x || a.box_y != c.box_y || a.box_h != c.box_h || a.noise_seed != c.noise_seed;
  }
  EXPECT_EQ(differ, 10);
}

// augmath::clip_u8 (the rounding of every blended / interpolated pixel, CPU and GPU) is written as
// selects so the CPU loops vectorize; it must stay clamp(lround(v), 0, 255) with NaN -> 0. The
// definition, on a strided sweep of all 2^32 bit patterns, every float within 64 ulps of each
// rounding boundary k/2 in [0, 256], and the special values.
TEST(AugmentMath, ClipU8IsClampedLroundOnEveryFloat) {
  auto want = [](float v) -> int {
    if (!(v > 0.f)) return 0;  // NaN, -0, negative
    if (v >= 255.f) return 255;
    return int(std::lround(v));  // v >= 0: half away from zero = half up
  };
  int64_t bad = 0, checked = 0;
  auto check = [&](float v) {
    ++checked;
    if (int(data::augmath::clip_u8(v)) != want(v) && ++bad <= 5)
      ADD_FAILURE() << "clip_u8(" << v << ") = " << int(data::augmath::clip_u8(v)) << ", want " << want(v);
  };
  for (uint64_t u = 0; u < (uint64_t(1) << 32); u += 4099) {
    float v;
    const uint32_t b = uint32_t(u);
    std::memcpy(&v, &b, 4);
    check(v);
  }
  for (int k = 0; k <= 512; ++k) {
    float v = 0.5f * float(k);
    for (int i = 0; i < 64; ++i) v = std::nextafter(v, -1.f);
    for (int i = 0; i < 129; ++i, v = std::nextafter(v, 1000.f)) check(v);
  }
  for (float v : {0.f, -0.f, 0.49999997f, 0.5f, 254.5f, 254.49998f, 255.f, 1e30f, -1e30f,
                  std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min()})
    check(v);
  EXPECT_EQ(bad, 0) << "of " << checked;
}
