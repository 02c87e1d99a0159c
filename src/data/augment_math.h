// The per-pixel arithmetic of the augmentations, shared by the CPU (data/augment.cpp) and the GPU
// (data/cuda/gpu_augment.cu) so both compute the same bits. Every multiply-add is written as an
// explicit fused multiply-add (or kept apart as a plain product passed as an argument), so neither
// compiler's contraction choice (g++ -ffp-contract=fast with FMA in x86-64-v3, nvcc --fmad=true)
// can change a result: each function is one rounding sequence on any IEEE-754 machine. (The CPU
// results before this header existed were the g++ contraction of the same expressions; the
// explicit forms below reproduce them bit for bit, checked when the header was introduced.)
// Plain header, no CUDA dependency: KAT_HD marks the functions host+device under nvcc.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define KAT_HD __host__ __device__
#else
#define KAT_HD
#endif

namespace kat::data::augmath {

KAT_HD inline float fmaf_(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return ::fmaf(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
KAT_HD inline double fma_(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return ::fma(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// clamp(lround(v), 0, 255), NaN -> 0: negative v clamps to 0 either way; for v >= 0, lround =
// trunc(v) + (frac >= 0.5), and v - trunc(v) is exact in float. Written without branches (selects
// that are max/min instructions, x86 maxps/minps' NaN rule included) so the CPU's pixel loops
// vectorize; equal to the branchy form on all 2^32 floats (checked exhaustively, 2026-12-08;
// tests/test_augment_plan.cpp checks a strided sweep and every rounding boundary).
KAT_HD inline uint8_t clip_u8(float v) {
  const float lo = v > 0.f ? v : 0.f;  // NaN and v <= 0 -> 0
  const float c = lo < 255.f ? lo : 255.f;
  const int t = static_cast<int>(c);
  return static_cast<uint8_t>(t + (c - static_cast<float>(t) >= 0.5f ? 1 : 0));
}

// Bilinear blend of four samples (warps): the top and bottom rows along x, then along y.
KAT_HD inline uint8_t bilerp(float p00, float p01, float p10, float p11, float fx, float fy) {
  const float top = fmaf_(p01, fx, p00 * (1 - fx));
  const float bot = fmaf_(p11, fx, p10 * (1 - fx));
  return clip_u8(fmaf_(bot, fy, top * (1 - fy)));
}

// Source coordinate of an inverse affine warp at output pixel centre (X, Y), in pixel-index units
// (centre minus 0.5): a X + b Y + t - 0.5.
KAT_HD inline double warp_coord(double a, double b, double t, double X, double Y) {
  return fma_(a, X, b * Y) + t - 0.5;
}

// The end of the separable resampling: the fp32 accumulator rounded half up, clamped to uint8.
KAT_HD inline uint8_t resample_round(float acc) {
  const int v = static_cast<int>(acc + 0.5f);
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// PIL ImageEnhance blend(degenerate, img, factor) = degenerate + factor * (img - degenerate).
KAT_HD inline uint8_t blend(float degenerate, float value, float factor) {
  return clip_u8(fmaf_(factor, value - degenerate, degenerate));
}

// ITU-R 601-2 luma (PIL's convert('L')), integer.
KAT_HD inline uint8_t luma(int r, int g, int b) {
  return static_cast<uint8_t>((r * 299 + g * 587 + b * 114 + 500) / 1000);
}

// PIL ImageOps.autocontrast (cutoff 0) table entry for channel range [lo, hi], hi > lo.
KAT_HD inline uint8_t autocontrast_value(int v, int lo, int hi) {
  const double scale = 255.0 / (hi - lo);
  const int r = static_cast<int>(fma_(static_cast<double>(v), scale, -(lo * scale)));
  return static_cast<uint8_t>(r < 0 ? 0 : (r > 255 ? 255 : r));
}

// Contrast's degenerate value: the mean luma (or gray level) of np pixels summing to sum, rounded.
KAT_HD inline uint8_t mean_level(double sum, double np) {
  const int m = static_cast<int>(sum / np + 0.5);
  return static_cast<uint8_t>(m < 0 ? 0 : (m > 255 ? 255 : m));
}

// Mixup of a pixel with its partner: l * mine + m * partner (l = lam, m = 1 - lam, as floats).
KAT_HD inline float mix(float l, float mine, float m, float partner) { return fmaf_(l, mine, m * partner); }

// Soft target: v = lam * [k == y_a] + (1 - lam) * [k == y_b], smoothed: v (1 - ls) + ls / K.
KAT_HD inline float smooth_target(double v, double ls, double off) {
  return static_cast<float>(fma_(v, 1.0 - ls, off));
}

}  // namespace kat::data::augmath
