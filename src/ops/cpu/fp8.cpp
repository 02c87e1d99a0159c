// FP8 reference ops and the linear layer's emulation, CPU.
#include "ops/cpu/fp8.h"

#include <bit>
#include <cmath>

#include "kat/core/error.h"
#include "ops/cpu/gemm.h"

namespace kat::ops {

namespace {

void check_scale(float s, const char* what) {
  KAT_CHECK(s > 0.0f && std::isfinite(s), what, ": the FP8 scale must be a positive finite number, got ", s);
}

// The constants of round_to_fp8 for one format.
struct Rounding {
  uint32_t min_normal_bits;  // fp32 bits of the format's smallest normal 2^(1 - bias)
  uint32_t max_bits;         // fp32 bits of the largest finite value
  uint32_t drop, half_m1;    // fp32 mantissa bits dropped (23 - mant); 2^(drop-1) - 1
  float magic;               // 2^(23 + 1 - bias - mant): its fp32 ulp is the smallest subnormal
};
Rounding rounding(Fp8Format f) {
  const Fp8Traits t = fp8_traits(f);
  const uint32_t drop = uint32_t(23 - t.mant);
  return {std::bit_cast<uint32_t>(std::ldexp(1.0f, 1 - t.bias)), std::bit_cast<uint32_t>(t.max_finite), drop,
          (1u << (drop - 1)) - 1, std::ldexp(1.0f, 23 + 1 - t.bias - t.mant)};
}

// decode(encode(v)) of core/fp8.h in fp32 arithmetic, branch-free so that the loops vectorise:
//   normal range: fp32's mantissa rounded to `mant` bits, half to even (the encoder's bit trick);
//   below the smallest normal: v + magic rounds (RNE, in fp32) to a multiple of the smallest
//     subnormal, because magic's ulp is that step and |v| < 2^(1-bias) << magic; subtracting magic
//     again is exact. (Needs no -ffast-math reassociation, which the build does not enable.)
//   beyond the largest finite value (infinity included): saturates; NaN stays NaN.
inline float round_to_fp8(float v, const Rounding& r) {
  const uint32_t b = std::bit_cast<uint32_t>(v);
  const uint32_t sign = b & 0x80000000u, a = b ^ sign;
  uint32_t n = (a + r.half_m1 + ((a >> r.drop) & 1u)) & ~((1u << r.drop) - 1u);
  n = n < r.max_bits ? n : r.max_bits;
  const float af = std::bit_cast<float>(a);
  const uint32_t s = std::bit_cast<uint32_t>((af + r.magic) - r.magic);
  uint32_t out = a < r.min_normal_bits ? s : n;
  out = a > 0x7F800000u ? a : out;  // NaN
  return std::bit_cast<float>(out | sign);
}

}  // namespace

float fp8_amax(int64_t n, const float* x) {
  float m = 0.0f;
#pragma omp parallel for simd schedule(static) reduction(max : m)
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    m = a > m ? a : m;  // a NaN compares false: skipped
  }
  return m;
}

void fp8_quantize(int64_t n, const float* x, float s, Fp8Format f, uint8_t* q) {
  check_scale(s, "fp8_quantize");
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) q[i] = float_to_fp8(x[i] * s, f);
}

void fp8_dequantize(int64_t n, const uint8_t* q, float s, Fp8Format f, float* y) {
  check_scale(s, "fp8_dequantize");
  const float inv = 1.0f / s;  // exact for a power of two
  float table[256];
  for (int c = 0; c < 256; ++c) table[c] = fp8_to_float(uint8_t(c), f) * inv;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = table[q[i]];
}

void fp8_fake_quantize(int64_t n, const float* x, float s, Fp8Format f, float* y) {
  check_scale(s, "fp8_fake_quantize");
  const Rounding r = rounding(f);
  const float inv = 1.0f / s;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = round_to_fp8(x[i] * s, r) * inv;
}

void linear_forward_fp8(int64_t rows, int64_t in, int64_t out, const float* x, const float* W, const float* b,
                        float s_x, float s_w, float* xq, float* wq, float* y) {
  check_linear_shape(rows, in, out, "linear_forward_fp8");
  fp8_fake_quantize(rows * in, x, s_x, Fp8Format::E4M3, xq);
  fp8_fake_quantize(out * in, W, s_w, Fp8Format::E4M3, wq);
  linear_forward<float>(rows, in, out, xq, wq, b, y);
}

void linear_backward_fp8(int64_t rows, int64_t in, int64_t out, const float* xq, const float* wq, const float* dy,
                         float s_dy, float* dyq, float* dx, float* dW, float* db, bool accumulate_dx) {
  check_linear_shape(rows, in, out, "linear_backward_fp8");
  // db from the fp32 dy, before dyq (which may alias dy) overwrites it.
  if (db) linear_backward<float>(rows, in, out, nullptr, nullptr, dy, nullptr, nullptr, db);
  fp8_fake_quantize(rows * out, dy, s_dy, Fp8Format::E5M2, dyq);
  linear_backward<float>(rows, in, out, xq, wq, dyq, dx, dW, nullptr, accumulate_dx);
}

}  // namespace kat::ops
