// GpuAugmenter (data/cuda/gpu_augment.cu) against the CPU's apply_plan on identical plans.
//
// Bound: 0 (bitwise) for every element outside the random-erasing rectangles, for every stage. Why:
// the GPU resamples with the CPU's own taps (computed on the host by make_taps / pil_taps) summed in
// the CPU's order with fused multiply-adds; every other float expression (warps, blends, the
// autocontrast table, mixup, targets) is one shared function of data/augment_math.h written with
// explicit FMAs, so neither compiler's contraction choices enter; histograms, extrema and sums are
// integers; normalisation uses the CPU's table. Inside an erasing rectangle (and where mixing
// reads a partner's rectangle) the values are the device's counter-based N(0, 1) noise, by design
// not the CPU's: there the test checks they are finite, bounded and roughly standard normal. The
// rectangle itself is the plan's (compared through the exact match everywhere else).
//
// Run on a GPU machine: kat_gpu_tests --gtest_filter='GpuAugment*'
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "data/augment_plan.h"
#include "data/cuda/gpu_augment.h"
#include "gpu_test_util.cuh"
#include "kat/core/error.h"
#include "kat/core/rng.h"
#include "kat/data/augment.h"
#include "ops/cuda/device_memory.h"

using namespace kat;
using namespace kat::data;
using kat::cuda::DeviceBuffer;
namespace cuda_aug = kat::data::cuda;

namespace {

struct AugCase {
  std::string name;
  bool lazy = true;
  double eval_crop_pct = 0.0;
  int channels = 3;  // the dataset's (output) channels
  bool train = true;
  std::string crop = "rrc";
  int out = 24, decode = 28;
  int randaug_n = 2;
  double randaug_m = 9;
  double erase = 0.5;
  double mixup = 0.8, cutmix = 1.0;
  int force_op = -1;  // >= 0: every RandAugment step is this op (applied), for per-op coverage
};

struct Source {
  std::vector<uint8_t> px;  // h x w x c, contiguous
  int h = 0, w = 0, c = 0;
  DeviceBuffer<uint8_t> dev;  // rows padded to row_bytes
  int64_t row_bytes = 0;
};

void random_source(Rng& r, Source& s, int h, int w, int c) {
  s.h = h;
  s.w = w;
  s.c = c;
  s.px.resize(size_t(h) * w * c);
  // Smooth gradients plus noise: resampling weights of every size matter, and histograms are uneven.
  const int lo = int(r.below(100)), span = 1 + int(r.below(156));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k)
        s.px[(size_t(y) * w + x) * c + k] =
            uint8_t(std::min(255, lo + int((span * (x + y + 7 * k)) / (h + w + 14)) + int(r.below(24))));
  s.row_bytes = int64_t(w) * c + int64_t(r.below(3)) * 16;  // a pitch wider than the row, sometimes
  s.dev.allocate(size_t(s.row_bytes) * h);
  KAT_CUDA_CHECK(cudaMemcpy2D(s.dev.data(), s.row_bytes, s.px.data(), size_t(w) * c, size_t(w) * c, h,
                              cudaMemcpyHostToDevice));
}

bool in_rect(const SamplePlan& p, int y, int x) {
  return p.erase && y >= p.erase_top && y < p.erase_top + p.erase_h && x >= p.erase_left &&
         x < p.erase_left + p.erase_w;
}

// One batch of `setup` on the CPU (apply_plan + apply_mix + mix_targets) and the GPU, compared.
void check_setup(const AugCase& su, uint64_t seed, int n) {
  SCOPED_TRACE(su.name + " seed " + std::to_string(seed));
  Rng r(seed);
  Dataset ds;  // only what plan_sample reads: lazy or not, fit, channels, labels
  ds.channels = su.channels;
  ds.num_classes = 5;
  ds.source = su.name;
  ds.height = ds.width = su.decode;
  ds.decode_size = su.decode;
  ds.eval_crop_pct = su.eval_crop_pct;
  for (int i = 0; i < n; ++i) ds.labels.push_back(int32_t(r.below(5)));
  if (su.lazy) {
    ds.files.assign(size_t(n), "unused.png");
  } else {
    ds.pixels.assign(size_t(n) * su.decode * su.decode * su.channels, 0);
  }
  LoaderConfig cfg;
  cfg.batch_size = n;
  cfg.seed = seed;
  cfg.aug.crop = su.crop;
  cfg.aug.out_size = su.out;
  cfg.aug.hflip = true;
  cfg.aug.randaug_n = su.randaug_n;
  cfg.aug.randaug_m = su.randaug_m;
  cfg.aug.random_erase = su.erase;
  cfg.aug.fill = int(r.below(256));
  cfg.aug.pad_mode = r.below(2) ? "zero" : "reflect";
  cfg.aug.mean = {0.485f, 0.456f, 0.406f};
  cfg.aug.std = {0.229f, 0.224f, 0.225f};
  if (su.channels == 1) cfg.aug.mean = {0.5f}, cfg.aug.std = {0.25f};
  cfg.mix.mixup_alpha = su.mixup;
  cfg.mix.cutmix_alpha = su.cutmix;
  cfg.mix.label_smoothing = 0.1;
  if (!su.train) cfg = LoaderConfig::eval(cfg);
  validate(cfg.aug, ds.height, ds.width, ds.channels);
  const int epoch = int(r.below(5)), batch = int(r.below(100));

  std::vector<Source> src(n);
  std::vector<SamplePlan> plans(n);
  std::vector<cuda_aug::DeviceImage> imgs(n);
  for (int i = 0; i < n; ++i) {
    const int c = r.below(4) == 0 ? 4 - su.channels : su.channels;  // some files in the other channel count
    int h = su.lazy ? 10 + int(r.below(70)) : su.decode, w = su.lazy ? 10 + int(r.below(70)) : su.decode;
    if (!su.lazy && c != su.channels) continue;
    random_source(r, src[i], h, w, su.lazy ? c : su.channels);
  }
  for (int i = 0; i < n; ++i) {
    if (!src[i].h) random_source(r, src[i], su.decode, su.decode, su.channels);
    plans[i] = plan_sample(cfg, ds, epoch, i, src[i].h, src[i].w, src[i].c);
    if (su.force_op >= 0)
      for (int k = 0; k < plans[i].randaug_steps; ++k) {
        RandAugStep& st = plans[i].randaug[k];
        st.op = RandAugOp(su.force_op);
        st.applied = true;
        st.magnitude = 10 * r.uniform();
        st.sign = randaug_signed(st.op) && r.below(2) ? -1.0 : 1.0;
      }
    imgs[i] = {src[i].dev.data(), src[i].h, src[i].w, src[i].c, src[i].row_bytes};
  }
  const int oc = su.channels, oh = plans[0].out_h, ow = plans[0].out_w;
  const size_t per = size_t(oc) * oh * ow;

  // CPU reference.
  const auto lut = make_norm_lut(cfg.aug, oc);
  std::vector<float> want(per * n), want_t(size_t(n) * ds.num_classes);
  AugScratch scratch;
  for (int i = 0; i < n; ++i)
    apply_plan(src[i].px.data(), plans[i], cfg.aug, lut.data(), scratch, want.data() + per * i);
  const MixResult want_mix = plan_batch_mix(cfg, epoch, batch, n, oh, ow);
  apply_mix(want_mix, want.data(), n, oc, oh, ow);
  mix_targets(batch_mix_config(cfg), want_mix, ds.labels.data(), n, ds.num_classes, want_t.data());

  // GPU, twice (bitwise determinism), outputs poisoned with NaN first.
  cuda_aug::GpuAugmenter aug(cfg, oc, oh, ow, ds.num_classes, n);
  DeviceBuffer<float> d_img(per * n), d_t(size_t(n) * ds.num_classes);
  std::vector<float> got[2], got_t[2];
  for (int rep = 0; rep < 2; ++rep) {
    const std::vector<float> nan_img(per * n, std::nanf("")), nan_t(d_t.size(), std::nanf(""));
    KAT_CUDA_CHECK(cudaMemcpy(d_img.data(), nan_img.data(), d_img.bytes(), cudaMemcpyHostToDevice));
    KAT_CUDA_CHECK(cudaMemcpy(d_t.data(), nan_t.data(), d_t.bytes(), cudaMemcpyHostToDevice));
    const MixResult m =
        aug.run(imgs.data(), plans.data(), ds.labels.data(), n, epoch, batch, d_img.data(), d_t.data(), nullptr);
    KAT_CUDA_CHECK(cudaDeviceSynchronize());
    ASSERT_EQ(m.lam, want_mix.lam);  // the mix decision: exact
    ASSERT_EQ(m.applied, want_mix.applied);
    ASSERT_EQ(m.cutmix, want_mix.cutmix);
    ASSERT_EQ(m.y0, want_mix.y0);
    ASSERT_EQ(m.y1, want_mix.y1);
    ASSERT_EQ(m.x0, want_mix.x0);
    ASSERT_EQ(m.x1, want_mix.x1);
    got[rep].resize(per * n);
    got_t[rep].resize(d_t.size());
    KAT_CUDA_CHECK(cudaMemcpy(got[rep].data(), d_img.data(), d_img.bytes(), cudaMemcpyDeviceToHost));
    KAT_CUDA_CHECK(cudaMemcpy(got_t[rep].data(), d_t.data(), d_t.bytes(), cudaMemcpyDeviceToHost));
  }
  ASSERT_EQ(0, std::memcmp(got[0].data(), got[1].data(), per * n * sizeof(float))) << "not deterministic";
  ASSERT_EQ(0, std::memcmp(got_t[0].data(), got_t[1].data(), got_t[0].size() * sizeof(float)));
  ASSERT_EQ(0, std::memcmp(got_t[0].data(), want_t.data(), want_t.size() * sizeof(float))) << "targets differ";

  const std::vector<float>& g = got[0];
  int64_t mismatches = 0, noise_n = 0;
  double noise_sum = 0, noise_sq = 0, max_diff = 0;
  std::string first;
  for (int i = 0; i < n; ++i) {
    const int partner = n - 1 - i;
    for (int k = 0; k < oc; ++k)
      for (int y = 0; y < oh; ++y)
        for (int x = 0; x < ow; ++x) {
          const size_t o = per * i + (size_t(k) * oh + y) * ow + x;
          ASSERT_TRUE(std::isfinite(g[o]))
              << "sample " << i << " (" << k << "," << y << "," << x << ") not written";
          const bool reads_partner =
              want_mix.applied && partner != i &&
              (!want_mix.cutmix || (y >= want_mix.y0 && y < want_mix.y1 && x >= want_mix.x0 && x < want_mix.x1));
          const bool own_used = !(want_mix.applied && want_mix.cutmix && reads_partner);
          const bool noisy =
              (own_used && in_rect(plans[i], y, x)) || (reads_partner && in_rect(plans[partner], y, x));
          if (noisy) {
            ASSERT_LT(std::fabs(g[o]), 12.f) << "erasing noise out of range";
            if (!want_mix.applied) {
              noise_sum += g[o];
              noise_sq += double(g[o]) * g[o];
              ++noise_n;
            }
            continue;
          }
          if (std::memcmp(&g[o], &want[o], sizeof(float)) != 0) {
            if (!mismatches)
              first = "sample " + std::to_string(i) + " channel " + std::to_string(k) + " at (" +
                      std::to_string(y) + ", " + std::to_string(x) + "): gpu " + std::to_string(g[o]) + " cpu " +
                      std::to_string(want[o]);
            ++mismatches;
            max_diff = std::max(max_diff, double(std::fabs(g[o] - want[o])));
          }
        }
  }
  EXPECT_EQ(mismatches, 0) << "of " << per * n << " elements; first: " << first << "; max |diff| " << max_diff;
  if (noise_n > 400) {  // N(0, 1): mean and standard deviation loosely (a few hundred samples)
    const double mean = noise_sum / noise_n, sd = std::sqrt(noise_sq / noise_n - mean * mean);
    EXPECT_LT(std::fabs(mean), 0.25) << noise_n << " noise values";
    EXPECT_GT(sd, 0.75);
    EXPECT_LT(sd, 1.25);
  }
}

}  // namespace

TEST(GpuAugment, MatchesCpuOnIdenticalPlans) {
  REQUIRE_GPU();
  std::vector<AugCase> setups;
  auto add = [&](AugCase s) { setups.push_back(s); };
  AugCase s;
  s.name = "lazy rrc from the original (DeiT)";
  add(s);
  s.name = "lazy rrc, gray dataset";
  s.channels = 1;
  add(s);
  s = AugCase{};
  s.name = "lazy training fit + pad crop";
  s.crop = "pad";
  s.out = 20;
  add(s);
  s.name = "lazy training fit + pad crop, same size";
  s.out = 28;
  add(s);
  s = AugCase{};
  s.name = "lazy training fit, no crop, resize";
  s.crop = "none";
  add(s);
  s = AugCase{};
  s.name = "lazy eval fit (bicubic), eval transform";
  s.train = false;
  s.eval_crop_pct = 0.875;
  s.out = 28;
  add(s);
  s.name = "lazy eval fit, gray";
  s.channels = 1;
  add(s);
  s = AugCase{};
  s.name = "in-memory, rrc, no mixing";
  s.lazy = false;
  s.mixup = s.cutmix = 0;
  add(s);
  s = AugCase{};
  s.name = "in-memory, eval resize";
  s.lazy = false;
  s.train = false;
  s.out = 20;
  add(s);
  s = AugCase{};
  s.name = "mixup only, odd batch";
  s.cutmix = 0;
  add(s);
  for (const AugCase& su : setups)
    for (uint64_t seed : {uint64_t(1), uint64_t(2), uint64_t(kat_gpu_test::fresh_seed())})
      check_setup(su, seed, su.name == "mixup only, odd batch" ? 7 : 8);
}

// Every RandAugment op on its own (all steps forced to it, random magnitudes and signs), colour and gray.
TEST(GpuAugment, EveryRandAugmentOpMatchesCpu) {
  REQUIRE_GPU();
  for (int op = 0; op <= int(RandAugOp::SolarizeAdd); ++op)
    for (int channels : {3, 1}) {
      if (channels == 1 && (RandAugOp(op) == RandAugOp::Color || RandAugOp(op) == RandAugOp::SolarizeAdd))
        continue;
      AugCase s;
      s.name = std::string("op ") + randaug_op_name(RandAugOp(op)) + (channels == 1 ? " gray" : " rgb");
      s.channels = channels;
      s.randaug_n = 3;
      s.erase = 0;
      s.mixup = s.cutmix = 0;
      s.force_op = op;
      check_setup(s, 100 + op, 6);
    }
}

// A plan drawn for another image size is refused, naming the image.
TEST(GpuAugment, MismatchedPlanIsAnError) {
  REQUIRE_GPU();
  Rng r(3);
  Source src;
  random_source(r, src, 20, 30, 3);
  Dataset ds;
  ds.channels = 3;
  ds.num_classes = 2;
  ds.labels = {0};
  ds.files = {"x.png"};
  ds.height = ds.width = ds.decode_size = 16;
  LoaderConfig cfg;
  cfg.aug.crop = "rrc";
  cfg.aug.out_size = 16;
  const SamplePlan p = plan_sample(cfg, ds, 0, 0, 25, 30, 3);
  const cuda_aug::DeviceImage im{src.dev.data(), 20, 30, 3, src.row_bytes};
  cuda_aug::GpuAugmenter aug(cfg, 3, 16, 16, 2, 1);
  DeviceBuffer<float> d_img(3 * 256), d_t(2);
  const int32_t label = 0;
  try {
    aug.run(&im, &p, &label, 1, 0, 0, d_img.data(), d_t.data(), nullptr);
    FAIL() << "expected an error";
  } catch (const kat::Error& e) {
    EXPECT_NE(std::string(e.what()).find("image 0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("25x30"), std::string::npos) << e.what();
  }
}
