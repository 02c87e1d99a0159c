// 8-bit floating point on the host: the two formats of FP8 training (OCP FP8, as Hopper's tensor
// cores and CUDA's cuda_fp8.h define them), encoded and decoded bit-exactly, so that the CPU
// reference quantizes to the very bytes a CUDA kernel writes with __nv_cvt_float_to_fp8(...,
// __NV_SATFINITE, ...).
//
//   E4M3 ("e4m3fn"): sign, 4 exponent bits (bias 7), 3 mantissa bits. Largest finite 448
//         (S.1111.110), smallest normal 2^-6, smallest subnormal 2^-9. No infinity: S.1111.111 is
//         NaN. Used for activations and weights (more precision, less range).
//   E5M2: sign, 5 exponent bits (bias 15), 2 mantissa bits. Largest finite 57344 (S.11110.11),
//         smallest normal 2^-14, smallest subnormal 2^-16, S.11111.00 = infinity, S.11111.xx
//         (xx != 0) NaN. Used for gradients (more range, less precision).
//
// Encoding rounds to nearest, ties to even (of the 8-bit code), and SATURATES: a finite value or
// infinity beyond the largest finite code becomes that code (with its sign), as __NV_SATFINITE
// does; every NaN becomes 0x7F (either format, whatever its sign: CUDA's conversion canonicalises
// NaNs, and a GPU's fp32 multiply by the scale returns the canonical NaN anyway). Values too small for the
// smallest subnormal round to (signed) zero.
// Plain C++ (no CUDA header): usable from .cpp and .cu host code alike.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace kat {

enum class Fp8Format { E4M3, E5M2 };

// The numbers that define a format: exponent bias, mantissa bits, largest finite code (sign off).
struct Fp8Traits {
  int bias, mant;
  uint8_t max_code;
  float max_finite;
};
inline constexpr Fp8Traits fp8_traits(Fp8Format f) {
  return f == Fp8Format::E4M3 ? Fp8Traits{7, 3, 0x7E, 448.0f} : Fp8Traits{15, 2, 0x7B, 57344.0f};
}
inline constexpr const char* fp8_name(Fp8Format f) { return f == Fp8Format::E4M3 ? "e4m3" : "e5m2"; }

inline float fp8_to_float(uint8_t code, Fp8Format f) {
  const Fp8Traits t = fp8_traits(f);
  const bool neg = code & 0x80;
  const int mag = code & 0x7F;
  const int e = mag >> t.mant, m = mag & ((1 << t.mant) - 1);
  float v;
  if (f == Fp8Format::E4M3 && mag == 0x7F) {
    v = std::numeric_limits<float>::quiet_NaN();
  } else if (f == Fp8Format::E5M2 && e == 31) {
    v = m == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
  } else if (e == 0) {  // subnormal: m * 2^(1 - bias - mant)
    v = std::ldexp(static_cast<float>(m), 1 - t.bias - t.mant);
  } else {
    v = std::ldexp(static_cast<float>((1 << t.mant) | m), e - t.bias - t.mant);
  }
  return neg ? -v : v;
}

inline uint8_t float_to_fp8(float x, Fp8Format f) {
  const Fp8Traits t = fp8_traits(f);
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80);
  const uint32_t abs_bits = bits & 0x7FFFFFFF;
  if (abs_bits > 0x7F800000) return 0x7F;  // NaN, canonical (see above)
  const float a = std::bit_cast<float>(abs_bits);
  uint32_t code;
  if (a < std::ldexp(1.0f, 1 - t.bias)) {
    // Below the smallest normal: a multiple of the smallest subnormal 2^(1-bias-mant). a * 2^(bias
    // -1+mant) is exact in fp32 (a power-of-two scaling of a value far from fp32's limits) and
    // nearbyint rounds half to even in the default rounding mode; k = 2^mant is the smallest
    // normal's code, which is what rounding up into it must give.
    code = static_cast<uint32_t>(std::nearbyint(std::ldexp(a, t.bias - 1 + t.mant)));
  } else {
    // Normal: round fp32's 23-bit mantissa to `mant` bits, half to even (a carry into the exponent
    // is the right result), then rebias the exponent.
    const int drop = 23 - t.mant;
    uint32_t r = abs_bits + ((1u << (drop - 1)) - 1) + ((abs_bits >> drop) & 1);
    r &= ~((1u << drop) - 1);
    const int e = static_cast<int>(r >> 23) - 127 + t.bias;
    code = e > 31 ? 0xFFu : (static_cast<uint32_t>(e) << t.mant) | ((r >> drop) & ((1u << t.mant) - 1));
  }
  if (code > t.max_code) code = t.max_code;  // saturate (infinity included)
  return sign | static_cast<uint8_t>(code);
}

}  // namespace kat
