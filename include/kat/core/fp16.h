// IEEE binary16 (half) <-> float on the host, inline and branch-light so that loops over them
// vectorise (the CPU GR-KAN op on fp16 tensors, ops/cpu/grkan.cpp). Narrowing rounds to nearest
// even with overflow to infinity, as CUDA's __float2half_rn; NaN stays NaN (quiet, 0x7E00 with the
// sign). Widening is exact (every half is a float).
// Plain C++17 (memcpy, not std::bit_cast): the GPU tests include it from .cu files.
#pragma once
#include <cstdint>
#include <cstring>

namespace kat {

namespace fp16_detail {
inline uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace fp16_detail

inline float fp16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7FFFu;  // exponent and mantissa
  // Shifted into a float's bit positions, the half's (exponent, mantissa) reads as the same number
  // times 2^-112 (biases 127 vs 15), also for subnormals; the power-of-two product is exact.
  float f = fp16_detail::from_bits(em << 13) * 0x1p112f;
  if (em >= 0x7C00u) f = fp16_detail::from_bits((em << 13) | 0x7F800000u);  // inf / NaN keep the payload
  return fp16_detail::from_bits(fp16_detail::bits(f) | sign);
}

inline uint16_t float_to_fp16(float f) {
  uint32_t u = fp16_detail::bits(f);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;  // |f|
  uint32_t h;
  if (u >= 0x47800000u) {  // |f| >= 65536 (rounds to inf at or above 65520, see below), inf or NaN
    h = u > 0x7F800000u ? 0x7E00u : 0x7C00u;
  } else if (u < 0x38800000u) {  // |f| < 2^-14: half subnormal or zero
    // Adding 0.5 (2^-1) aligns the float's mantissa so that its low 10 bits are the half's
    // subnormal mantissa (units of 2^-24), rounded to nearest even by the FPU's addition.
    const float t = fp16_detail::from_bits(u) + 0.5f;
    h = fp16_detail::bits(t) - 0x3F000000u;
  } else {
    // Normal: rebias the exponent (127 -> 15) and round the 13 dropped mantissa bits to nearest
    // even; a carry out of the mantissa increments the exponent, up to inf (0x7C00) for >= 65520.
    const uint32_t odd = (u >> 13) & 1u;
    u += 0xC8000FFFu + odd;  // (15 - 127) << 23, plus the rounding bias 0xFFF + odd
    h = u >> 13;
  }
  return static_cast<uint16_t>(h | (sign >> 16));
}

}  // namespace kat
