// Device helpers shared by the CUDA kernels (grkan, layernorm, elementwise, cross_entropy, optim,
// attention, embed): bf16 (and, for GR-KAN, fp16) packing, scalar fp32 loads/stores of either element type,
// 16-byte vector types per DType (8 bf16 or 4 fp32 per thread), unpack to fp32, vector stores, and
// programmatic-dependent-launch (PDL) waits. Vector loads live with their kernels: GR-KAN reads
// through the read-only cache (__ldg, grkan.cu), the row and elementwise ops use plain loads
// (row_ops.cuh) because some of them write in place (dlogits over logits).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "kat/core/dtype.h"

namespace kat::cuda::vecio {

// Every kernel launched with programmatic stream serialization executes griddepcontrol.wait before
// its first global memory access: that waits until the preceding grid has completed and its writes
// are visible, i.e. ordinary stream order for all data. launch_dependents lets the next kernel be
// scheduled early (it then waits the same way).
__device__ __forceinline__ void griddep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void griddep_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ float bf16_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);  // .x = lo (low half), .y = hi
  uint32_t u;
  memcpy(&u, &h, 4);
  return u;
}
__device__ __forceinline__ unsigned short to_bf16(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
// IEEE half (DType::F16, the GR-KAN op only): two per 32-bit word, low half first.
__device__ __forceinline__ float f16_lo(uint32_t u) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(u)));
}
__device__ __forceinline__ float f16_hi(uint32_t u) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(u >> 16)));
}
__device__ __forceinline__ uint32_t pack_f16x2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);  // .x = lo (low half), .y = hi
  uint32_t u;
  memcpy(&u, &h, 4);
  return u;
}
__device__ __forceinline__ unsigned short to_f16(float f) { return __half_as_ushort(__float2half_rn(f)); }

// Scalar element access in fp32 for either storage type (round to nearest even on store).
__device__ __forceinline__ float ld_f(const float* p) { return *p; }
__device__ __forceinline__ float ld_f(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void st_f(float* p, float v) { *p = v; }
__device__ __forceinline__ void st_f(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ float ld_f(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ void st_f(__half* p, float v) { *p = __float2half_rn(v); }

// Raw 16-byte (or scalar) vector as loaded; unpacked to fp32 right before use, so that prefetched
// vectors cost 4 registers each, not 8.
template <DType S, int VEC>
struct RawT;
template <>
struct RawT<DType::F32, 4> {
  using type = float4;
};
template <>
struct RawT<DType::F32, 1> {
  using type = float;
};
template <>
struct RawT<DType::BF16, 8> {
  using type = uint4;
};
template <>
struct RawT<DType::BF16, 1> {
  using type = unsigned short;
};
template <>
struct RawT<DType::F16, 8> {
  using type = uint4;
};
template <>
struct RawT<DType::F16, 1> {
  using type = unsigned short;
};
template <DType S, int VEC>
using Raw = typename RawT<S, VEC>::type;

template <DType S, int VEC>
__device__ __forceinline__ void unpack(const Raw<S, VEC>& t, float (&v)[VEC]) {
  if constexpr (S == DType::F32) {
    if constexpr (VEC == 4) {
      v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
    } else {
      v[0] = t;
    }
  } else if constexpr (S == DType::BF16) {
    if constexpr (VEC == 8) {
      v[0] = bf16_lo(t.x), v[1] = bf16_hi(t.x), v[2] = bf16_lo(t.y), v[3] = bf16_hi(t.y);
      v[4] = bf16_lo(t.z), v[5] = bf16_hi(t.z), v[6] = bf16_lo(t.w), v[7] = bf16_hi(t.w);
    } else {
      v[0] = __uint_as_float(static_cast<uint32_t>(t) << 16);
    }
  } else {
    if constexpr (VEC == 8) {
      v[0] = f16_lo(t.x), v[1] = f16_hi(t.x), v[2] = f16_lo(t.y), v[3] = f16_hi(t.y);
      v[4] = f16_lo(t.z), v[5] = f16_hi(t.z), v[6] = f16_lo(t.w), v[7] = f16_hi(t.w);
    } else {
      v[0] = f16_lo(t);
    }
  }
}

// Element offset `off` of a storage-typed tensor; (off * bytes) must be 16-byte aligned for VEC > 1.
template <DType S, int VEC>
__device__ __forceinline__ void store_vec(void* base, int64_t off, const float (&v)[VEC]) {
  if constexpr (S == DType::F32) {
    float* p = static_cast<float*>(base) + off;
    if constexpr (VEC == 4)
      *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    else
      p[0] = v[0];
  } else if constexpr (S == DType::BF16) {
    unsigned short* p = static_cast<unsigned short*>(base) + off;
    if constexpr (VEC == 8)
      *reinterpret_cast<uint4*>(p) = make_uint4(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]),
                                                pack_bf16x2(v[4], v[5]), pack_bf16x2(v[6], v[7]));
    else
      p[0] = to_bf16(v[0]);
  } else {
    unsigned short* p = static_cast<unsigned short*>(base) + off;
    if constexpr (VEC == 8)
      *reinterpret_cast<uint4*>(p) = make_uint4(pack_f16x2(v[0], v[1]), pack_f16x2(v[2], v[3]),
                                                pack_f16x2(v[4], v[5]), pack_f16x2(v[6], v[7]));
    else
      p[0] = to_f16(v[0]);
  }
}

}  // namespace kat::cuda::vecio
