#include "kat/data/augment.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "data/augment_math.h"
#include "data/augment_plan.h"
#include "data/resample.h"
#include "kat/core/error.h"
#include "kat/data/image_io.h"

namespace kat::data {

uint64_t seed_hash(std::initializer_list<uint64_t> words) {
  auto fmix = [](uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  uint64_t h = 0x6A09E667F3BCC909ull ^ (static_cast<uint64_t>(words.size()) * 0x9E3779B97F4A7C15ull);
  for (uint64_t w : words) h = fmix(h + 0x9E3779B97F4A7C15ull + fmix(w + 0x632BE59BD9B4E019ull));
  return h;
}

// ---- config ----------------------------------------------------------------------------------------
void validate(const AugmentConfig& cfg, int height, int width, int channels) {
  KAT_CHECK(cfg.crop == "none" || cfg.crop == "pad" || cfg.crop == "rrc",
            "augment: crop must be none, pad or rrc, got '", cfg.crop, "'");
  KAT_CHECK(cfg.pad_mode == "zero" || cfg.pad_mode == "reflect",
            "augment: pad_mode must be zero or reflect, got '", cfg.pad_mode, "'");
  KAT_CHECK(cfg.out_size >= 0 && cfg.out_size <= 4096, "augment: out_size must be in [0, 4096], got ",
            cfg.out_size);
  KAT_CHECK(cfg.padding >= 0 && cfg.padding <= 1024, "augment: padding must be in [0, 1024], got ", cfg.padding);
  if (cfg.crop == "pad" && cfg.pad_mode == "reflect")
    KAT_CHECK(cfg.padding < std::min(height, width), "augment: reflect padding ", cfg.padding,
              " must be smaller than the image size ", height, "x", width);
  KAT_CHECK(cfg.rrc_scale_min > 0 && cfg.rrc_scale_min <= cfg.rrc_scale_max && cfg.rrc_scale_max <= 1.0,
            "augment: rrc scale must satisfy 0 < min <= max <= 1, got [", cfg.rrc_scale_min, ", ",
            cfg.rrc_scale_max, "]");
  KAT_CHECK(cfg.rrc_ratio_min > 0 && cfg.rrc_ratio_min <= cfg.rrc_ratio_max, "augment: bad rrc ratio [",
            cfg.rrc_ratio_min, ", ", cfg.rrc_ratio_max, "]");
  KAT_CHECK(cfg.eval_crop_pct > 0 && cfg.eval_crop_pct <= 1.0, "augment: eval_crop_pct must be in (0, 1], got ",
            cfg.eval_crop_pct);
  KAT_CHECK(cfg.randaug_n >= 0 && cfg.randaug_n <= 16, "augment: randaug_n must be in [0, 16], got ",
            cfg.randaug_n);
  KAT_CHECK(cfg.randaug_m >= 0 && cfg.randaug_m <= 30, "augment: randaug_m must be in [0, 30], got ",
            cfg.randaug_m);
  KAT_CHECK(cfg.randaug_mstd >= 0, "augment: randaug_mstd must be >= 0, got ", cfg.randaug_mstd);
  KAT_CHECK(cfg.randaug_p >= 0 && cfg.randaug_p <= 1, "augment: randaug_p must be in [0, 1], got ", cfg.randaug_p);
  KAT_CHECK(cfg.fill >= 0 && cfg.fill <= 255, "augment: fill must be in [0, 255], got ", cfg.fill);
  KAT_CHECK(cfg.random_erase >= 0 && cfg.random_erase <= 1, "augment: random_erase must be in [0, 1], got ",
            cfg.random_erase);
  KAT_CHECK(cfg.mean.empty() || cfg.mean.size() == 1 || static_cast<int>(cfg.mean.size()) == channels,
            "augment: mean has ", cfg.mean.size(), " values but images have ", channels, " channels");
  KAT_CHECK(cfg.std.empty() || cfg.std.size() == 1 || static_cast<int>(cfg.std.size()) == channels,
            "augment: std has ", cfg.std.size(), " values but images have ", channels, " channels");
  for (size_t i = 0; i < cfg.std.size(); ++i)
    KAT_CHECK(cfg.std[i] > 0, "augment: std[", i, "] must be > 0, got ", cfg.std[i]);
  KAT_CHECK(cfg.out_size > 0 || cfg.crop != "rrc" || height == width,
            "augment: rrc on non-square images needs out_size");
}

std::vector<float> make_norm_lut(const AugmentConfig& cfg, int channels) {
  std::vector<float> lut(static_cast<size_t>(channels) * 256);
  for (int c = 0; c < channels; ++c) {
    const float m = cfg.mean.empty() ? 0.5f : cfg.mean[cfg.mean.size() == 1 ? 0 : c];
    const float s = cfg.std.empty() ? 0.5f : cfg.std[cfg.std.size() == 1 ? 0 : c];
    for (int v = 0; v < 256; ++v) lut[c * 256 + v] = (static_cast<float>(v) / 255.f - m) / s;
  }
  return lut;
}

// ---- geometry helpers --------------------------------------------------------------------------------
namespace {

inline int reflect_index(int i, int n) {
  // numpy/torch "reflect" (edge not repeated); valid for |overflow| < n
  if (i < 0) return -i;
  if (i >= n) return 2 * (n - 1) - i;
  return i;
}

// Pad by p (zero/fill or reflect), crop h x w at (dy, dx) in padded coordinates, optional h-flip.
void pad_crop(const uint8_t* src, int h, int w, int c, int p, bool reflect, int fill, int dy, int dx, bool flip,
              uint8_t* dst, std::vector<int>& colmap) {
  colmap.resize(w);
  for (int x = 0; x < w; ++x) {
    const int ox = flip ? (w - 1 - x) : x;
    int sx = ox + dx - p;
    if (sx < 0 || sx >= w) sx = reflect ? reflect_index(sx, w) : -1;
    colmap[x] = sx;
  }
  for (int y = 0; y < h; ++y) {
    int sy = y + dy - p;
    if (sy < 0 || sy >= h) sy = reflect ? reflect_index(sy, h) : -1;
    uint8_t* drow = dst + static_cast<size_t>(y) * w * c;
    if (sy < 0) {
      std::memset(drow, fill, static_cast<size_t>(w) * c);
      continue;
    }
    const uint8_t* srow = src + static_cast<size_t>(sy) * w * c;
    if (c == 1) {
      for (int x = 0; x < w; ++x) {
        const int sx = colmap[x];
        drow[x] = sx < 0 ? static_cast<uint8_t>(fill) : srow[sx];
      }
    } else {
      for (int x = 0; x < w; ++x) {
        const int sx = colmap[x];
        for (int k = 0; k < c; ++k) drow[x * c + k] = sx < 0 ? static_cast<uint8_t>(fill) : srow[sx * c + k];
      }
    }
  }
}

void hflip_inplace(uint8_t* img, int h, int w, int c) {
  for (int y = 0; y < h; ++y) {
    uint8_t* row = img + static_cast<size_t>(y) * w * c;
    for (int x = 0; x < w / 2; ++x)
      for (int k = 0; k < c; ++k) std::swap(row[x * c + k], row[(w - 1 - x) * c + k]);
  }
}

// Resize the shorter side to max(oh, ow) / crop_pct, then center-crop oh x ow; implemented as one
// resample of the matching source box.
void resize_center_crop(const uint8_t* src, int h, int w, int c, int oh, int ow, double crop_pct, uint8_t* dst) {
  const SourceBox b = center_crop_box(h, w, oh, ow, crop_pct);
  resample_bilinear(src, h, w, c, b.y0, b.x0, b.h, b.w, dst, oh, ow);
}

// Per-pixel N(0, 1) noise (timm's mode "pixel") over the plan's rectangle of a CHW image, drawn from
// rng: Box-Muller using both values of each pair (one log, sqrt and sincos per two pixels).
void erase_noise(float* img, int c, int h, int w, const SamplePlan& p, Rng& rng) {
  double spare = 0.0;
  bool have_spare = false;
  for (int k = 0; k < c; ++k)
    for (int y = p.erase_top; y < p.erase_top + p.erase_h; ++y) {
      float* row = img + (static_cast<size_t>(k) * h + y) * w;
      for (int x = p.erase_left; x < p.erase_left + p.erase_w; ++x) {
        if (have_spare) {
          row[x] = static_cast<float>(spare);
          have_spare = false;
          continue;
        }
        double u1 = rng.uniform();
        if (u1 < 1e-300) u1 = 1e-300;
        const double r = std::sqrt(-2.0 * std::log(u1)), t = 6.283185307179586 * rng.uniform();
        row[x] = static_cast<float>(r * std::cos(t));
        spare = r * std::sin(t);
        have_spare = true;
      }
    }
}

// The augmentation of a plan; erasing noise from noise_rng (at plan.cpu_noise_state).
void apply_augment_with(const uint8_t* src, const SamplePlan& p, const AugmentConfig& cfg, const float* lut,
                        AugScratch& s, float* out, Rng& noise_rng) {
  const int h = p.aug_h, w = p.aug_w, c = p.aug_c, oh = p.out_h, ow = p.out_w;
  const size_t onp = static_cast<size_t>(oh) * ow;
  const uint8_t* img = src;  // final uint8 HWC (oh x ow x c)
  const bool same = oh == h && ow == w;
  static thread_local std::vector<int> colmap;
  if (p.train) {
    s.a.resize(onp * c);
    if (p.crop == SamplePlan::Crop::Pad) {
      const bool reflect = cfg.pad_mode == "reflect";
      if (same) {
        pad_crop(src, h, w, c, cfg.padding, reflect, cfg.fill, p.pad_dy, p.pad_dx, p.flip, s.a.data(), colmap);
      } else {
        s.b.resize(static_cast<size_t>(h) * w * c);
        pad_crop(src, h, w, c, cfg.padding, reflect, cfg.fill, p.pad_dy, p.pad_dx, p.flip, s.b.data(), colmap);
        resize_center_crop(s.b.data(), h, w, c, oh, ow, 1.0, s.a.data());
      }
    } else if (p.crop == SamplePlan::Crop::Rrc) {
      resample_bilinear(src, h, w, c, p.box_y, p.box_x, p.box_h, p.box_w, s.a.data(), oh, ow);
      if (p.flip) hflip_inplace(s.a.data(), oh, ow, c);
    } else {
      if (same)
        std::memcpy(s.a.data(), src, onp * c);
      else
        resize_center_crop(src, h, w, c, oh, ow, 1.0, s.a.data());
      if (p.flip) hflip_inplace(s.a.data(), oh, ow, c);
    }
    for (int i = 0; i < p.randaug_steps; ++i)
      if (p.randaug[i].applied)
        apply_randaug(randaug_params(p.randaug[i], oh, ow), s.a.data(), oh, ow, c, cfg.fill, s.b);
    img = s.a.data();
  } else if (!same || cfg.eval_crop_pct < 1.0) {
    s.a.resize(onp * c);
    resize_center_crop(src, h, w, c, oh, ow, cfg.eval_crop_pct, s.a.data());
    img = s.a.data();
  }
  // normalize HWC uint8 -> CHW float
  if (c == 1) {
    for (size_t i = 0; i < onp; ++i) out[i] = lut[img[i]];
  } else if (c == 3) {  // one pass over the pixels, three sequential output planes
    const float *l0 = lut, *l1 = lut + 256, *l2 = lut + 512;
    float *o0 = out, *o1 = out + onp, *o2 = out + 2 * onp;
    for (size_t i = 0; i < onp; ++i) {
      const uint8_t* px = img + 3 * i;
      o0[i] = l0[px[0]];
      o1[i] = l1[px[1]];
      o2[i] = l2[px[2]];
    }
  } else {
    for (int k = 0; k < c; ++k) {
      const float* l = lut + k * 256;
      float* o = out + k * onp;
      for (size_t i = 0; i < onp; ++i) o[i] = l[img[i * c + k]];
    }
  }
  if (p.erase) erase_noise(out, c, oh, ow, p, noise_rng);
}

}  // namespace

void apply_augment(const uint8_t* src, const SamplePlan& p, const AugmentConfig& cfg, const float* lut,
                   AugScratch& scratch, float* out) {
  Rng noise;
  noise.set_state(p.cpu_noise_state[0], p.cpu_noise_state[1]);
  apply_augment_with(src, p, cfg, lut, scratch, out, noise);
}

void augment_image(const uint8_t* src, int h, int w, int c, const AugmentConfig& cfg, const float* lut, Rng& rng,
                   AugScratch& s, float* out) {
  SamplePlan p;
  plan_augment(cfg, rng, h, w, c, p);
  apply_augment_with(src, p, cfg, lut, s, out, rng);  // rng is at cpu_noise_state here
}

std::vector<float> eval_transform(const uint8_t* src, int h, int w, int c, int out_channels,
                                  const AugmentConfig& cfg, int* out_h, int* out_w) {
  KAT_CHECK(c == 1 || c == 3, "eval_transform: image channels must be 1 or 3, got ", c);
  KAT_CHECK(out_channels == 1 || out_channels == 3, "eval_transform: output channels must be 1 or 3, got ",
            out_channels);
  AugmentConfig e = cfg;
  e.train = false;
  validate(e, h, w, out_channels);
  const size_t np = static_cast<size_t>(h) * w;
  std::vector<uint8_t> conv;
  const uint8_t* img = src;
  if (c != out_channels) {
    conv.resize(np * out_channels);
    convert_channels(src, np, c, out_channels, conv.data());
    img = conv.data();
  }
  const int oh = aug_out_h(e, h), ow = aug_out_w(e, w);
  std::vector<float> out(static_cast<size_t>(out_channels) * oh * ow);
  const auto lut = make_norm_lut(e, out_channels);
  AugScratch s;
  Rng rng(0);  // unused by the eval transform
  augment_image(img, h, w, out_channels, e, lut.data(), rng, s, out.data());
  if (out_h) *out_h = oh;
  if (out_w) *out_w = ow;
  return out;
}

// ---- RandAugment -----------------------------------------------------------------------------------
const char* randaug_op_name(RandAugOp op) {
  switch (op) {
    case RandAugOp::Identity: return "Identity";
    case RandAugOp::Rotate: return "Rotate";
    case RandAugOp::ShearX: return "ShearX";
    case RandAugOp::ShearY: return "ShearY";
    case RandAugOp::TranslateX: return "TranslateX";
    case RandAugOp::TranslateY: return "TranslateY";
    case RandAugOp::AutoContrast: return "AutoContrast";
    case RandAugOp::Equalize: return "Equalize";
    case RandAugOp::Solarize: return "Solarize";
    case RandAugOp::Posterize: return "Posterize";
    case RandAugOp::Contrast: return "Contrast";
    case RandAugOp::Brightness: return "Brightness";
    case RandAugOp::Sharpness: return "Sharpness";
    case RandAugOp::Color: return "Color";
    case RandAugOp::SolarizeAdd: return "SolarizeAdd";
  }
  return "?";
}

const std::vector<RandAugOp>& randaug_ops(int channels) {
  using O = RandAugOp;
  static const std::vector<O> gray = {O::Identity,   O::Rotate,       O::ShearX,   O::ShearY,   O::TranslateX,
                                      O::TranslateY, O::AutoContrast, O::Equalize, O::Solarize, O::Posterize,
                                      O::Contrast,   O::Brightness,   O::Sharpness};
  static const std::vector<O> color = [] {
    std::vector<O> v = gray;
    v.push_back(O::Color);
    v.push_back(O::SolarizeAdd);
    return v;
  }();
  return channels == 1 ? gray : color;
}

namespace {

// Inverse affine warp: output pixel centre (X, Y) samples the input at (a X + b Y + t0, d X + e Y + t1)
// with bilinear interpolation; outside pixels read `fill`. (The interior and border paths blend
// with the same augmath::bilerp, so they give the same bits.)
void warp_affine(uint8_t* img, int h, int w, int c, const RandAugParams& m, int fill,
                 std::vector<uint8_t>& scratch) {
  scratch.assign(img, img + static_cast<size_t>(h) * w * c);
  const uint8_t* src = scratch.data();
  const float fv = static_cast<float>(fill);
  auto px = [&](int yy, int xx, int k) -> float {
    if (yy < 0 || yy >= h || xx < 0 || xx >= w) return fv;
    return src[(static_cast<size_t>(yy) * w + xx) * c + k];
  };
  for (int y = 0; y < h; ++y) {
    const double Y = y + 0.5;
    for (int x = 0; x < w; ++x) {
      const double X = x + 0.5;
      const double u = augmath::warp_coord(m.a, m.b, m.t0, X, Y), v = augmath::warp_coord(m.d, m.e, m.t1, X, Y);
      uint8_t* o = img + (static_cast<size_t>(y) * w + x) * c;
      if (u <= -1.0 || v <= -1.0 || u >= w || v >= h) {
        for (int k = 0; k < c; ++k) o[k] = static_cast<uint8_t>(fill);
        continue;
      }
      const int x0 = static_cast<int>(std::floor(u)), y0 = static_cast<int>(std::floor(v));
      const float fx = static_cast<float>(u - x0), fy = static_cast<float>(v - y0);
      if (x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h) {  // interior: no bounds checks
        const uint8_t* p00 = src + (static_cast<size_t>(y0) * w + x0) * c;
        const uint8_t* p10 = p00 + static_cast<size_t>(w) * c;
        for (int k = 0; k < c; ++k) o[k] = augmath::bilerp(p00[k], p00[c + k], p10[k], p10[c + k], fx, fy);
        continue;
      }
      for (int k = 0; k < c; ++k)
        o[k] = augmath::bilerp(px(y0, x0, k), px(y0, x0 + 1, k), px(y0 + 1, x0, k), px(y0 + 1, x0 + 1, k), fx, fy);
    }
  }
}

void apply_lut(uint8_t* img, size_t n, int c, const std::array<uint8_t, 256>* luts) {
  for (size_t i = 0; i < n; ++i)
    for (int k = 0; k < c; ++k) img[i * c + k] = luts[k][img[i * c + k]];
}

// PIL ImageEnhance: blend(degenerate, img, factor) = degenerate + factor * (img - degenerate)
void blend_with(uint8_t* img, const uint8_t* degenerate, size_t count, float factor) {
  for (size_t i = 0; i < count; ++i) img[i] = augmath::blend(degenerate[i], img[i], factor);
}

}  // namespace

void apply_randaug(const RandAugParams& prm, uint8_t* img, int h, int w, int c, int fill,
                   std::vector<uint8_t>& scratch) {
  const size_t np = static_cast<size_t>(h) * w, count = np * c;
  using O = RandAugOp;
  switch (prm.op) {
    case O::Identity: return;
    case O::Rotate:
    case O::ShearX:
    case O::ShearY:
    case O::TranslateX:
    case O::TranslateY: warp_affine(img, h, w, c, prm, fill, scratch); return;
    case O::AutoContrast: {
      std::array<uint8_t, 256> luts[3];
      for (int k = 0; k < c; ++k) {
        int lo = 255, hi = 0;
        for (size_t i = 0; i < np; ++i) {
          lo = std::min<int>(lo, img[i * c + k]);
          hi = std::max<int>(hi, img[i * c + k]);
        }
        for (int v = 0; v < 256; ++v)
          luts[k][v] = hi <= lo ? static_cast<uint8_t>(v) : augmath::autocontrast_value(v, lo, hi);
      }
      apply_lut(img, np, c, luts);
      return;
    }
    case O::Equalize: {  // PIL ImageOps.equalize
      std::array<uint8_t, 256> luts[3];
      for (int k = 0; k < c; ++k) {
        std::array<int64_t, 256> hist{};
        for (size_t i = 0; i < np; ++i) hist[img[i * c + k]]++;
        int64_t total = 0, last = 0, nonzero = 0;
        for (int v = 0; v < 256; ++v)
          if (hist[v]) {
            total += hist[v];
            last = hist[v];
            ++nonzero;
          }
        const int64_t step = nonzero <= 1 ? 0 : (total - last) / 255;
        if (step == 0) {
          for (int v = 0; v < 256; ++v) luts[k][v] = static_cast<uint8_t>(v);
        } else {
          int64_t n = step / 2;
          for (int v = 0; v < 256; ++v) {
            luts[k][v] = static_cast<uint8_t>(std::min<int64_t>(n / step, 255));
            n += hist[v];
          }
        }
      }
      apply_lut(img, np, c, luts);
      return;
    }
    case O::Solarize: {  // (stores every byte, a select: the loop vectorizes)
      const int thresh = prm.thresh;
      for (size_t i = 0; i < count; ++i) {
        const int v = img[i];
        img[i] = static_cast<uint8_t>(v >= thresh ? 255 - v : v);
      }
      return;
    }
    case O::SolarizeAdd: {
      const int add = prm.add;
      for (size_t i = 0; i < count; ++i) {
        const int v = img[i];
        img[i] = static_cast<uint8_t>(v < 128 ? std::min(255, v + add) : v);
      }
      return;
    }
    case O::Posterize:
      for (size_t i = 0; i < count; ++i) img[i] &= prm.mask;
      return;
    case O::Contrast: {
      double sum = 0;
      for (size_t i = 0; i < np; ++i)
        sum += c == 3 ? augmath::luma(img[i * 3], img[i * 3 + 1], img[i * 3 + 2]) : img[i];
      scratch.assign(count, augmath::mean_level(sum, static_cast<double>(np)));
      blend_with(img, scratch.data(), count, prm.factor);
      return;
    }
    case O::Brightness:
      scratch.assign(count, 0);
      blend_with(img, scratch.data(), count, prm.factor);
      return;
    case O::Color:
      if (c != 3) return;
      scratch.resize(count);
      for (size_t i = 0; i < np; ++i)
        scratch[i * 3] = scratch[i * 3 + 1] = scratch[i * 3 + 2] =
            augmath::luma(img[i * 3], img[i * 3 + 1], img[i * 3 + 2]);
      blend_with(img, scratch.data(), count, prm.factor);
      return;
    case O::Sharpness:  // PIL SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, borders unchanged
      scratch.assign(img, img + count);
      if (h >= 3 && w >= 3) {
        for (int y = 1; y < h - 1; ++y)
          for (int x = 1; x < w - 1; ++x)
            for (int k = 0; k < c; ++k) {
              int acc = 0;
              for (int dy = -1; dy <= 1; ++dy)
                for (int dx = -1; dx <= 1; ++dx)
                  acc +=
                      img[(static_cast<size_t>(y + dy) * w + (x + dx)) * c + k] * ((dx == 0 && dy == 0) ? 5 : 1);
              scratch[(static_cast<size_t>(y) * w + x) * c + k] = static_cast<uint8_t>((acc + 6) / 13);
            }
      }
      blend_with(img, scratch.data(), count, prm.factor);
      return;
  }
}

void apply_randaug_op(RandAugOp op, double magnitude, Rng& rng, uint8_t* img, int h, int w, int c, int fill,
                      std::vector<uint8_t>& scratch) {
  RandAugStep step;
  step.op = op;
  step.applied = true;
  step.magnitude = magnitude;
  if (randaug_signed(op)) step.sign = rng.uniform() < 0.5 ? -1.0 : 1.0;
  apply_randaug(randaug_params(step, h, w), img, h, w, c, fill, scratch);
}

void rand_augment(const AugmentConfig& cfg, Rng& rng, uint8_t* img, int h, int w, int c,
                  std::vector<uint8_t>& scratch) {
  AugmentConfig only = cfg;  // plan just the RandAugment steps of cfg
  only.train = true;
  only.crop = "none";
  only.hflip = false;
  only.random_erase = 0;
  only.out_size = 0;
  SamplePlan p;
  plan_augment(only, rng, h, w, c, p);
  for (int i = 0; i < p.randaug_steps; ++i)
    if (p.randaug[i].applied) apply_randaug(randaug_params(p.randaug[i], h, w), img, h, w, c, cfg.fill, scratch);
}

// ---- random erasing ----------------------------------------------------------------------------------
void random_erase(float* img, int c, int h, int w, double probability, Rng& rng) {
  SamplePlan p;
  plan_erase(probability, rng, h, w, p);
  if (p.erase) erase_noise(img, c, h, w, p, rng);
}

// ---- mixup / cutmix -----------------------------------------------------------------------------------
void apply_mix(const MixResult& r, float* images, int n, int c, int h, int w) {
  if (!r.applied) return;
  const size_t plane = static_cast<size_t>(h) * w, img = plane * c;
  if (r.cutmix) {
    for (int i = 0; i < n / 2; ++i) {
      float* a = images + static_cast<size_t>(i) * img;
      float* b = images + static_cast<size_t>(n - 1 - i) * img;
      for (int k = 0; k < c; ++k)
        for (int y = r.y0; y < r.y1; ++y)
          for (int x = r.x0; x < r.x1; ++x) {
            const size_t o = k * plane + static_cast<size_t>(y) * w + x;
            std::swap(a[o], b[o]);
          }
    }
  } else {
    const float l = static_cast<float>(r.lam), m = static_cast<float>(1.0 - r.lam);
    for (int i = 0; i < n / 2; ++i) {
      float* a = images + static_cast<size_t>(i) * img;
      float* b = images + static_cast<size_t>(n - 1 - i) * img;
      for (size_t o = 0; o < img; ++o) {
        const float va = a[o], vb = b[o];
        a[o] = augmath::mix(l, va, m, vb);
        b[o] = augmath::mix(l, vb, m, va);
      }
    }
  }
}

void mix_targets(const MixConfig& cfg, const MixResult& r, const int32_t* labels, int n, int classes,
                 float* targets) {
  const double ls = cfg.label_smoothing, off = ls / classes;
  for (int i = 0; i < n; ++i) {
    float* t = targets + static_cast<size_t>(i) * classes;
    const int ya = labels[i], yb = labels[n - 1 - i];
    // accumulate in double then write: t = (lam*onehot(ya) + (1-lam)*onehot(yb)) * (1-ls) + ls/K
    for (int k = 0; k < classes; ++k) {
      const double v = (k == ya ? r.lam : 0.0) + (k == yb ? 1.0 - r.lam : 0.0);
      t[k] = augmath::smooth_target(v, ls, off);
    }
  }
}

MixResult mix_batch(const MixConfig& cfg, Rng& rng, float* images, int n, int c, int h, int w,
                    const int32_t* labels, int classes, float* targets) {
  const MixResult r = plan_mix(cfg, rng, n, h, w);
  apply_mix(r, images, n, c, h, w);
  mix_targets(cfg, r, labels, n, classes, targets);
  return r;
}

}  // namespace kat::data
