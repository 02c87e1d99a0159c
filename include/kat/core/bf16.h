// bfloat16 <-> float on the host, inline so that loops over them vectorise (the GPU input upload
// converts whole batches). Narrowing rounds to nearest even, as CUDA's __float2bfloat16_rn; NaN
// stays NaN (quiet, 0x7FC0).
#pragma once
#include <bit>
#include <cstdint>

namespace kat {

inline float bf16_to_float(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

inline uint16_t float_to_bf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7FFFFFFF) > 0x7F800000) return 0x7FC0;
  return static_cast<uint16_t>((x + 0x7FFF + ((x >> 16) & 1)) >> 16);
}

}  // namespace kat
