#include "kat/data/augment.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

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

// Resize the shorter side to `scale` pixels' worth (scale_h x scale_w resized image), then center-crop
// oh x ow; implemented as one resample of the matching source box.
void resize_center_crop(const uint8_t* src, int h, int w, int c, int oh, int ow, double crop_pct, uint8_t* dst) {
  const double target = std::max(oh, ow) / crop_pct;  // resized shorter side
  const double s = target / std::min(h, w);           // resize factor
  const double rh = h * s, rw = w * s;
  const double top = (rh - oh) / 2.0, left = (rw - ow) / 2.0;
  resample_bilinear(src, h, w, c, top / s, left / s, oh / s, ow / s, dst, oh, ow);
}

struct Box {
  int y, x, h, w;
};

// torchvision RandomResizedCrop.get_params
Box rrc_box(int h, int w, const AugmentConfig& cfg, Rng& rng) {
  const double area = static_cast<double>(h) * w;
  const double lr0 = std::log(cfg.rrc_ratio_min), lr1 = std::log(cfg.rrc_ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * rng.uniform(cfg.rrc_scale_min, cfg.rrc_scale_max);
    const double aspect = std::exp(rng.uniform(lr0, lr1));
    const int cw = static_cast<int>(std::lround(std::sqrt(target * aspect)));
    const int ch = static_cast<int>(std::lround(std::sqrt(target / aspect)));
    if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
      const int y = static_cast<int>(rng.below(static_cast<uint64_t>(h - ch + 1)));
      const int x = static_cast<int>(rng.below(static_cast<uint64_t>(w - cw + 1)));
      return {y, x, ch, cw};
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
  return {(h - ch) / 2, (w - cw) / 2, ch, cw};
}

}  // namespace

void augment_image(const uint8_t* src, int h, int w, int c, const AugmentConfig& cfg, const float* lut, Rng& rng,
                   AugScratch& s, float* out) {
  const int oh = aug_out_h(cfg, h), ow = aug_out_w(cfg, w);
  const size_t onp = static_cast<size_t>(oh) * ow;
  const uint8_t* img = src;  // final uint8 HWC (oh x ow x c)
  const bool same = oh == h && ow == w;
  static thread_local std::vector<int> colmap;
  if (cfg.train) {
    s.a.resize(onp * c);
    if (cfg.crop == "pad") {
      const int p = cfg.padding;
      const int dy = static_cast<int>(rng.below(static_cast<uint64_t>(2 * p + 1)));
      const int dx = static_cast<int>(rng.below(static_cast<uint64_t>(2 * p + 1)));
      const bool flip = cfg.hflip && rng.uniform() < 0.5;
      const bool reflect = cfg.pad_mode == "reflect";
      if (same) {
        pad_crop(src, h, w, c, p, reflect, cfg.fill, dy, dx, flip, s.a.data(), colmap);
      } else {
        s.b.resize(static_cast<size_t>(h) * w * c);
        pad_crop(src, h, w, c, p, reflect, cfg.fill, dy, dx, flip, s.b.data(), colmap);
        resize_center_crop(s.b.data(), h, w, c, oh, ow, 1.0, s.a.data());
      }
    } else if (cfg.crop == "rrc") {
      const Box b = rrc_box(h, w, cfg, rng);
      const bool flip = cfg.hflip && rng.uniform() < 0.5;
      resample_bilinear(src, h, w, c, b.y, b.x, b.h, b.w, s.a.data(), oh, ow);
      if (flip) hflip_inplace(s.a.data(), oh, ow, c);
    } else {
      const bool flip = cfg.hflip && rng.uniform() < 0.5;
      if (same)
        std::memcpy(s.a.data(), src, onp * c);
      else
        resize_center_crop(src, h, w, c, oh, ow, 1.0, s.a.data());
      if (flip) hflip_inplace(s.a.data(), oh, ow, c);
    }
    if (cfg.randaug_n > 0) rand_augment(cfg, rng, s.a.data(), oh, ow, c, s.b);
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
      const uint8_t* p = img + 3 * i;
      o0[i] = l0[p[0]];
      o1[i] = l1[p[1]];
      o2[i] = l2[p[2]];
    }
  } else {
    for (int k = 0; k < c; ++k) {
      const float* l = lut + k * 256;
      float* o = out + k * onp;
      for (size_t i = 0; i < onp; ++i) o[i] = l[img[i * c + k]];
    }
  }
  if (cfg.train && cfg.random_erase > 0) random_erase(out, c, oh, ow, cfg.random_erase, rng);
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
    if (c == 1) {
      for (size_t p = 0; p < np; ++p) conv[p * 3] = conv[p * 3 + 1] = conv[p * 3 + 2] = src[p];
    } else {
      for (size_t p = 0; p < np; ++p)
        conv[p] =
            static_cast<uint8_t>((src[p * 3] * 299 + src[p * 3 + 1] * 587 + src[p * 3 + 2] * 114 + 500) / 1000);
    }
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

// clamp(lround(v), 0, 255) without the libm call (it was ~4 % of the loader): negative v clamps to
// 0 either way; for v >= 0, lround = trunc(v) + (frac >= 0.5), and v - trunc(v) is exact in float.
inline uint8_t clip_u8(float v) {
  if (!(v > 0.f)) return 0;
  if (v >= 255.f) return 255;
  const int t = static_cast<int>(v);
  return static_cast<uint8_t>(t + (v - static_cast<float>(t) >= 0.5f));
}

// Inverse affine warp: output pixel centre (X, Y) samples the input at (a X + b Y + t0, d X + e Y + t1)
// with bilinear interpolation; outside pixels read `fill`.
// Bilinear blend of four samples with explicit fused multiply-adds, so the interior and border paths
// of warp_affine (and any compiler's contraction choices) give the same bits.
inline uint8_t bilerp(float p00, float p01, float p10, float p11, float fx, float fy) {
  const float top = std::fma(p01, fx, p00 * (1 - fx));
  const float bot = std::fma(p11, fx, p10 * (1 - fx));
  return clip_u8(std::fma(bot, fy, top * (1 - fy)));
}

void warp_affine(uint8_t* img, int h, int w, int c, double a, double b, double t0, double d, double e, double t1,
                 int fill, std::vector<uint8_t>& scratch) {
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
      const double u = a * X + b * Y + t0 - 0.5, v = d * X + e * Y + t1 - 0.5;
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
        for (int k = 0; k < c; ++k) o[k] = bilerp(p00[k], p00[c + k], p10[k], p10[c + k], fx, fy);
        continue;
      }
      for (int k = 0; k < c; ++k)
        o[k] = bilerp(px(y0, x0, k), px(y0, x0 + 1, k), px(y0 + 1, x0, k), px(y0 + 1, x0 + 1, k), fx, fy);
    }
  }
}

void apply_lut(uint8_t* img, size_t n, int c, const std::array<uint8_t, 256>* luts) {
  for (size_t i = 0; i < n; ++i)
    for (int k = 0; k < c; ++k) img[i * c + k] = luts[k][img[i * c + k]];
}

// PIL ImageEnhance: blend(degenerate, img, factor) = degenerate + factor * (img - degenerate)
void blend_with(uint8_t* img, const uint8_t* degenerate, size_t count, double factor) {
  const float f = static_cast<float>(factor);
  for (size_t i = 0; i < count; ++i) {
    const float d = degenerate[i];
    img[i] = clip_u8(d + f * (static_cast<float>(img[i]) - d));
  }
}

uint8_t luma(const uint8_t* p) {
  return static_cast<uint8_t>((p[0] * 299 + p[1] * 587 + p[2] * 114 + 500) / 1000);
}

}  // namespace

void apply_randaug_op(RandAugOp op, double magnitude, Rng& rng, uint8_t* img, int h, int w, int c, int fill,
                      std::vector<uint8_t>& scratch) {
  const double level = std::clamp(magnitude, 0.0, 10.0) / 10.0;
  const size_t np = static_cast<size_t>(h) * w, count = np * c;
  auto sign = [&] { return rng.uniform() < 0.5 ? -1.0 : 1.0; };
  using O = RandAugOp;
  switch (op) {
    case O::Identity: return;
    case O::Rotate: {
      const double ang = sign() * 30.0 * level * 3.14159265358979323846 / 180.0;
      const double cs = std::cos(ang), sn = std::sin(ang), cx = w / 2.0, cy = h / 2.0;
      // src = centre + R(ang) (dst - centre)
      warp_affine(img, h, w, c, cs, -sn, cx - cs * cx + sn * cy, sn, cs, cy - sn * cx - cs * cy, fill, scratch);
      return;
    }
    case O::ShearX: warp_affine(img, h, w, c, 1, sign() * 0.3 * level, 0, 0, 1, 0, fill, scratch); return;
    case O::ShearY: warp_affine(img, h, w, c, 1, 0, 0, sign() * 0.3 * level, 1, 0, fill, scratch); return;
    case O::TranslateX: warp_affine(img, h, w, c, 1, 0, sign() * 0.45 * level * w, 0, 1, 0, fill, scratch); return;
    case O::TranslateY: warp_affine(img, h, w, c, 1, 0, 0, 0, 1, sign() * 0.45 * level * h, fill, scratch); return;
    case O::AutoContrast: {
      std::array<uint8_t, 256> luts[3];
      for (int k = 0; k < c; ++k) {
        int lo = 255, hi = 0;
        for (size_t i = 0; i < np; ++i) {
          lo = std::min<int>(lo, img[i * c + k]);
          hi = std::max<int>(hi, img[i * c + k]);
        }
        for (int v = 0; v < 256; ++v) {
          if (hi <= lo) {
            luts[k][v] = static_cast<uint8_t>(v);
          } else {
            const double scale = 255.0 / (hi - lo);
            luts[k][v] = static_cast<uint8_t>(std::clamp(static_cast<int>(v * scale - lo * scale), 0, 255));
          }
        }
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
    case O::Solarize: {  // increasing severity: threshold 256 -> 0
      const int thresh = 256 - static_cast<int>(level * 256);
      for (size_t i = 0; i < count; ++i)
        if (img[i] >= thresh) img[i] = static_cast<uint8_t>(255 - img[i]);
      return;
    }
    case O::SolarizeAdd: {
      const int add = static_cast<int>(level * 110);
      for (size_t i = 0; i < count; ++i)
        if (img[i] < 128) img[i] = static_cast<uint8_t>(std::min(255, img[i] + add));
      return;
    }
    case O::Posterize: {  // increasing severity: keep 8 -> 4 bits
      const int bits = 8 - static_cast<int>(level * 4);
      const uint8_t mask = static_cast<uint8_t>(0xFF << (8 - bits));
      for (size_t i = 0; i < count; ++i) img[i] &= mask;
      return;
    }
    case O::Contrast: {
      const double f = 1.0 + sign() * 0.9 * level;
      double sum = 0;
      for (size_t i = 0; i < np; ++i) sum += c == 3 ? luma(img + i * 3) : img[i];
      const uint8_t mean = static_cast<uint8_t>(std::clamp(static_cast<int>(sum / np + 0.5), 0, 255));
      scratch.assign(count, mean);
      blend_with(img, scratch.data(), count, f);
      return;
    }
    case O::Brightness: {
      const double f = 1.0 + sign() * 0.9 * level;
      scratch.assign(count, 0);
      blend_with(img, scratch.data(), count, f);
      return;
    }
    case O::Color: {
      const double f = 1.0 + sign() * 0.9 * level;
      if (c != 3) return;
      scratch.resize(count);
      for (size_t i = 0; i < np; ++i) scratch[i * 3] = scratch[i * 3 + 1] = scratch[i * 3 + 2] = luma(img + i * 3);
      blend_with(img, scratch.data(), count, f);
      return;
    }
    case O::Sharpness: {  // PIL SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, borders unchanged
      const double f = 1.0 + sign() * 0.9 * level;
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
      blend_with(img, scratch.data(), count, f);
      return;
    }
  }
}

void rand_augment(const AugmentConfig& cfg, Rng& rng, uint8_t* img, int h, int w, int c,
                  std::vector<uint8_t>& scratch) {
  const auto& ops = randaug_ops(c);
  for (int i = 0; i < cfg.randaug_n; ++i) {
    const RandAugOp op = ops[rng.below(ops.size())];
    if (cfg.randaug_p < 1.0 && rng.uniform() > cfg.randaug_p) continue;
    double m = cfg.randaug_m;
    if (cfg.randaug_mstd > 0) m += cfg.randaug_mstd * rng.normal();
    m = std::clamp(m, 0.0, 10.0);
    apply_randaug_op(op, m, rng, img, h, w, c, cfg.fill, scratch);
  }
}

// ---- random erasing ----------------------------------------------------------------------------------
void random_erase(float* img, int c, int h, int w, double probability, Rng& rng) {
  if (rng.uniform() >= probability) return;
  const double area = static_cast<double>(h) * w;
  const double lr0 = std::log(0.3), lr1 = std::log(1.0 / 0.3);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = rng.uniform(0.02, 1.0 / 3.0) * area;
    const double aspect = std::exp(rng.uniform(lr0, lr1));
    const int eh = static_cast<int>(std::lround(std::sqrt(target * aspect)));
    const int ew = static_cast<int>(std::lround(std::sqrt(target / aspect)));
    if (ew < w && eh < h && ew > 0 && eh > 0) {
      const int top = static_cast<int>(rng.below(static_cast<uint64_t>(h - eh + 1)));
      const int left = static_cast<int>(rng.below(static_cast<uint64_t>(w - ew + 1)));
      // Per-pixel N(0, 1) noise (timm's mode "pixel"), Box-Muller using both values of each pair
      // (one log, sqrt and sincos per two pixels; this was ~10 % of the DeiT-recipe loader).
      double spare = 0.0;
      bool have_spare = false;
      for (int k = 0; k < c; ++k)
        for (int y = top; y < top + eh; ++y) {
          float* row = img + (static_cast<size_t>(k) * h + y) * w;
          for (int x = left; x < left + ew; ++x) {
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
      return;
    }
  }
}

// ---- mixup / cutmix -----------------------------------------------------------------------------------
MixResult mix_batch(const MixConfig& cfg, Rng& rng, float* images, int n, int c, int h, int w,
                    const int32_t* labels, int classes, float* targets) {
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
    const size_t plane = static_cast<size_t>(h) * w, img = plane * c;
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
        const float l = static_cast<float>(lam), m = static_cast<float>(1.0 - lam);
        for (int i = 0; i < n / 2; ++i) {
          float* a = images + static_cast<size_t>(i) * img;
          float* b = images + static_cast<size_t>(n - 1 - i) * img;
          for (size_t o = 0; o < img; ++o) {
            const float va = a[o], vb = b[o];
            a[o] = l * va + m * vb;
            b[o] = l * vb + m * va;
          }
        }
      }
    }
    r.lam = lam;
  }
  const double ls = cfg.label_smoothing, off = ls / classes;
  for (int i = 0; i < n; ++i) {
    float* t = targets + static_cast<size_t>(i) * classes;
    std::fill(t, t + classes, 0.f);
    const int ya = labels[i], yb = labels[n - 1 - i];
    // accumulate in double then write: t = (lam*onehot(ya) + (1-lam)*onehot(yb)) * (1-ls) + ls/K
    for (int k = 0; k < classes; ++k) {
      double v = (k == ya ? r.lam : 0.0) + (k == yb ? 1.0 - r.lam : 0.0);
      t[k] = static_cast<float>(v * (1.0 - ls) + off);
    }
  }
  return r;
}

}  // namespace kat::data
