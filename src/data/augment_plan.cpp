// Planning (every random draw of a sample or a batch, no pixels) and applying a plan from the
// decoded source on the CPU. The pixel operations themselves are in augment.cpp.
#include "data/augment_plan.h"

#include <algorithm>
#include <cmath>

#include "data/resample.h"
#include "kat/core/error.h"
#include "kat/data/image_io.h"

namespace kat::data {

namespace {

// torchvision RandomResizedCrop.get_params on an h x w image.
void rrc_box(int h, int w, const AugmentConfig& cfg, Rng& rng, SamplePlan& p) {
  const double area = static_cast<double>(h) * w;
  const double lr0 = std::log(cfg.rrc_ratio_min), lr1 = std::log(cfg.rrc_ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * rng.uniform(cfg.rrc_scale_min, cfg.rrc_scale_max);
    const double aspect = std::exp(rng.uniform(lr0, lr1));
    const int cw = static_cast<int>(std::lround(std::sqrt(target * aspect)));
    const int ch = static_cast<int>(std::lround(std::sqrt(target / aspect)));
    if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
      p.box_y = static_cast<int>(rng.below(static_cast<uint64_t>(h - ch + 1)));
      p.box_x = static_cast<int>(rng.below(static_cast<uint64_t>(w - cw + 1)));
      p.box_h = ch;
      p.box_w = cw;
      return;
    }
  }
  const double in_ratio = static_cast<double>(w) / h;
  int cw = w, ch = h;
  if (in_ratio < cfg.rrc_ratio_min) {
    ch = std::max(1, static_cast<int>(std::lround(w / cfg.rrc_ratio_min)));
  } else if (in_ratio > cfg.rrc_ratio_max) {
    cw = std::max(1, static_cast<int>(std::lround(h * cfg.rrc_ratio_max)));
  }
  ch = std::min(ch, h);
  cw = std::min(cw, w);
  p.box_y = (h - ch) / 2;
  p.box_x = (w - cw) / 2;
  p.box_h = ch;
  p.box_w = cw;
}

}  // namespace

bool randaug_signed(RandAugOp op) {
  using O = RandAugOp;
  return op == O::Rotate || op == O::ShearX || op == O::ShearY || op == O::TranslateX || op == O::TranslateY ||
         op == O::Contrast || op == O::Brightness || op == O::Color || op == O::Sharpness;
}

void plan_erase(double probability, Rng& rng, int h, int w, SamplePlan& p) {
  p.erase = false;
  if (rng.uniform() < probability) {
    const double area = static_cast<double>(h) * w;
    const double lr0 = std::log(0.3), lr1 = std::log(1.0 / 0.3);
    for (int attempt = 0; attempt < 10; ++attempt) {
      const double target = rng.uniform(0.02, 1.0 / 3.0) * area;
      const double aspect = std::exp(rng.uniform(lr0, lr1));
      const int eh = static_cast<int>(std::lround(std::sqrt(target * aspect)));
      const int ew = static_cast<int>(std::lround(std::sqrt(target / aspect)));
      if (ew < w && eh < h && ew > 0 && eh > 0) {
        p.erase = true;
        p.erase_top = static_cast<int>(rng.below(static_cast<uint64_t>(h - eh + 1)));
        p.erase_left = static_cast<int>(rng.below(static_cast<uint64_t>(w - ew + 1)));
        p.erase_h = eh;
        p.erase_w = ew;
        break;
      }
    }
  }
  p.cpu_noise_state[0] = rng.state0();
  p.cpu_noise_state[1] = rng.state1();
}

void plan_augment(const AugmentConfig& cfg, Rng& rng, int h, int w, int c, SamplePlan& p) {
  p.aug_h = h;
  p.aug_w = w;
  p.aug_c = c;
  p.out_h = aug_out_h(cfg, h);
  p.out_w = aug_out_w(cfg, w);
  p.train = cfg.train;
  p.crop = SamplePlan::Crop::None;
  p.flip = false;
  p.randaug_steps = 0;
  p.erase = false;
  p.cpu_noise_state[0] = rng.state0();
  p.cpu_noise_state[1] = rng.state1();
  if (!cfg.train) return;  // the eval transform draws nothing
  if (cfg.crop == "pad") {
    p.crop = SamplePlan::Crop::Pad;
    const int pad = cfg.padding;
    p.pad_dy = static_cast<int>(rng.below(static_cast<uint64_t>(2 * pad + 1)));
    p.pad_dx = static_cast<int>(rng.below(static_cast<uint64_t>(2 * pad + 1)));
  } else if (cfg.crop == "rrc") {
    p.crop = SamplePlan::Crop::Rrc;
    rrc_box(h, w, cfg, rng, p);
  }
  p.flip = cfg.hflip && rng.uniform() < 0.5;
  KAT_CHECK(cfg.randaug_n >= 0 && cfg.randaug_n <= kMaxRandAugSteps, "augment: randaug_n must be in [0, ",
            kMaxRandAugSteps, "], got ", cfg.randaug_n);
  const auto& ops = randaug_ops(c);
  p.randaug_steps = cfg.randaug_n;
  for (int i = 0; i < cfg.randaug_n; ++i) {
    RandAugStep& s = p.randaug[i];
    s = RandAugStep{};
    s.op = ops[rng.below(ops.size())];
    if (cfg.randaug_p < 1.0 && rng.uniform() > cfg.randaug_p) continue;
    s.applied = true;
    double m = cfg.randaug_m;
    if (cfg.randaug_mstd > 0) m += cfg.randaug_mstd * rng.normal();
    s.magnitude = std::clamp(m, 0.0, 10.0);
    if (randaug_signed(s.op)) s.sign = rng.uniform() < 0.5 ? -1.0 : 1.0;
  }
  p.cpu_noise_state[0] = rng.state0();
  p.cpu_noise_state[1] = rng.state1();
  if (cfg.random_erase > 0) plan_erase(cfg.random_erase, rng, p.out_h, p.out_w, p);
}

RandAugParams randaug_params(const RandAugStep& step, int h, int w) {
  RandAugParams r;
  r.op = step.op;
  const double level = std::clamp(step.magnitude, 0.0, 10.0) / 10.0;
  const double sign = step.sign;
  using O = RandAugOp;
  switch (step.op) {
    case O::Identity:
    case O::AutoContrast:
    case O::Equalize: break;
    case O::Rotate: {
      const double ang = sign * 30.0 * level * 3.14159265358979323846 / 180.0;
      const double cs = std::cos(ang), sn = std::sin(ang), cx = w / 2.0, cy = h / 2.0;
      // src = centre + R(ang) (dst - centre)
      r.a = cs;
      r.b = -sn;
      r.t0 = cx - cs * cx + sn * cy;
      r.d = sn;
      r.e = cs;
      r.t1 = cy - sn * cx - cs * cy;
      break;
    }
    case O::ShearX: r.b = sign * 0.3 * level; break;
    case O::ShearY: r.d = sign * 0.3 * level; break;
    case O::TranslateX: r.t0 = sign * 0.45 * level * w; break;
    case O::TranslateY: r.t1 = sign * 0.45 * level * h; break;
    case O::Solarize: r.thresh = 256 - static_cast<int>(level * 256); break;  // severity: threshold 256 -> 0
    case O::SolarizeAdd: r.add = static_cast<int>(level * 110); break;
    case O::Posterize: {  // severity: keep 8 -> 4 bits
      const int bits = 8 - static_cast<int>(level * 4);
      r.mask = static_cast<uint8_t>(0xFF << (8 - bits));
      break;
    }
    case O::Contrast:
    case O::Brightness:
    case O::Color:
    case O::Sharpness: r.factor = static_cast<float>(1.0 + sign * 0.9 * level); break;
  }
  return r;
}

SamplePlan plan_sample(const LoaderConfig& cfg, const Dataset& ds, int64_t epoch, int64_t index, int src_h,
                       int src_w, int channels) {
  KAT_CHECK(index >= 0 && static_cast<size_t>(index) < ds.size(), ds.source, ": sample index ", index,
            " out of range [0, ", ds.size(), ")");
  KAT_CHECK(src_h > 0 && src_w > 0 && (channels == 1 || channels == 3), ds.source, ": image ", index,
            " decoded as ", src_h, "x", src_w, "x", channels, " (need a positive size and 1 or 3 channels)");
  SamplePlan p;
  p.src_h = src_h;
  p.src_w = src_w;
  p.channels = channels;
  int h = src_h, w = src_w;
  // As make_batch: lazy folders in training with RandomResizedCrop crop from the original image;
  // other lazy reads are fitted by read_image (decode_fitted); in-memory images are used as stored.
  const bool original_rrc = ds.lazy() && cfg.aug.train && cfg.aug.crop == "rrc" && cfg.aug.out_size > 0;
  if (ds.lazy() && !original_rrc) {
    p.fit_size = ds.decode_size;
    if (ds.eval_crop_pct > 0) {
      p.fit_crop_pct = ds.eval_crop_pct;
      p.fit =
          src_h == ds.decode_size && src_w == ds.decode_size ? SamplePlan::Fit::None : SamplePlan::Fit::EvalFit;
    } else {
      p.fit = SamplePlan::Fit::TrainFit;
    }
    h = w = ds.decode_size;
  } else if (!ds.lazy()) {
    KAT_CHECK(src_h == ds.height && src_w == ds.width, ds.source, ": image ", index, " is ", src_h, "x", src_w,
              " but the in-memory dataset holds ", ds.height, "x", ds.width, " images");
  }
  Rng rng(seed_hash({cfg.seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index), seed_tag("aug")}));
  plan_augment(cfg.aug, rng, h, w, ds.channels, p);
  p.noise_seed = seed_hash(
      {cfg.seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index), seed_tag("aug"), seed_tag("erase")});
  return p;
}

void fit_source(const uint8_t* src, const SamplePlan& p, std::vector<uint8_t>& out) {
  // As the lazy loader: read_original converts the full image; read_image fits in the file's
  // channels, then converts (the order matters for RGB -> gray).
  const int c = p.channels;
  out.resize(static_cast<size_t>(p.aug_h) * p.aug_w * p.aug_c);
  if (p.fit == SamplePlan::Fit::None) {
    KAT_CHECK(p.aug_h == p.src_h && p.aug_w == p.src_w, "fit_source: plan without a fit maps ", p.src_h, "x",
              p.src_w, " to ", p.aug_h, "x", p.aug_w);
    convert_channels(src, static_cast<size_t>(p.src_h) * p.src_w, c, p.aug_c, out.data());
    return;
  }
  std::vector<uint8_t> fitted(static_cast<size_t>(p.fit_size) * p.fit_size * c);
  if (p.fit == SamplePlan::Fit::TrainFit)
    resize_shorter_center_crop(src, p.src_h, p.src_w, c, p.fit_size, fitted.data());
  else
    eval_resize_center_crop(src, p.src_h, p.src_w, c, p.fit_size, p.fit_crop_pct, fitted.data());
  convert_channels(fitted.data(), fitted.size() / c, c, p.aug_c, out.data());
}

void apply_plan(const uint8_t* src, const SamplePlan& p, const AugmentConfig& cfg, const float* lut,
                AugScratch& scratch, float* out) {
  thread_local std::vector<uint8_t> fitted;
  if (p.fit == SamplePlan::Fit::None && p.channels == p.aug_c) {
    apply_augment(src, p, cfg, lut, scratch, out);
    return;
  }
  fit_source(src, p, fitted);
  apply_augment(fitted.data(), p, cfg, lut, scratch, out);
}

// ---- Mixup / CutMix ------------------------------------------------------------------------------------
MixResult plan_mix(const MixConfig& cfg, Rng& rng, int n, int h, int w) {
  MixResult r;
  if (cfg.enabled() && n > 0 && rng.uniform() < cfg.prob) {
    double lam;
    bool cut = false;
    if (cfg.mixup_alpha > 0 && cfg.cutmix_alpha > 0) {
      cut = rng.uniform() < cfg.switch_prob;
      lam = cut ? rng.beta(cfg.cutmix_alpha, cfg.cutmix_alpha) : rng.beta(cfg.mixup_alpha, cfg.mixup_alpha);
    } else if (cfg.mixup_alpha > 0) {
      lam = rng.beta(cfg.mixup_alpha, cfg.mixup_alpha);
    } else {
      cut = true;
      lam = rng.beta(cfg.cutmix_alpha, cfg.cutmix_alpha);
    }
    if (!std::isfinite(lam)) lam = 1.0;
    lam = std::clamp(lam, 0.0, 1.0);
    r.cutmix = cut;
    if (lam != 1.0) {
      r.applied = true;
      if (cut) {  // timm rand_bbox + cutmix_bbox_and_lam (correct_lam)
        const double ratio = std::sqrt(1.0 - lam);
        const int cut_h = static_cast<int>(h * ratio), cut_w = static_cast<int>(w * ratio);
        const int cy = static_cast<int>(rng.below(static_cast<uint64_t>(h)));
        const int cx = static_cast<int>(rng.below(static_cast<uint64_t>(w)));
        r.y0 = std::clamp(cy - cut_h / 2, 0, h);
        r.y1 = std::clamp(cy + cut_h / 2, 0, h);
        r.x0 = std::clamp(cx - cut_w / 2, 0, w);
        r.x1 = std::clamp(cx + cut_w / 2, 0, w);
        if (cfg.correct_lam)
          lam = 1.0 - static_cast<double>(r.y1 - r.y0) * (r.x1 - r.x0) / (static_cast<double>(h) * w);
      }
    }
    r.lam = lam;
  }
  return r;
}

MixConfig batch_mix_config(const LoaderConfig& cfg) {
  MixConfig mc = cfg.mix;
  if (!cfg.aug.train) mc.mixup_alpha = mc.cutmix_alpha = 0;  // eval: never mix
  return mc;
}

MixResult plan_batch_mix(const LoaderConfig& cfg, int64_t epoch, int64_t batch, int n, int h, int w) {
  Rng rng(seed_hash({cfg.seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(batch), seed_tag("mix")}));
  return plan_mix(batch_mix_config(cfg), rng, n, h, w);
}

}  // namespace kat::data
