// Device helpers of the row and elementwise kernels (layernorm.cu, cross_entropy.cu,
// elementwise.cu): plain (not read-only-cache) loads of dtype-typed tensors, and "teams".
//
// Row ops (LayerNorm, cross-entropy) use teams: TPR consecutive threads (a power of two, 4 to
// 1024) own one row and keep it in registers as raw 16-byte vectors (8 bf16 / 4 fp32; scalars on
// the fallback path), at most VPT vectors per thread; TPR is the smallest team that fits the row.
// A block of max(TPR, 256) threads holds 256/TPR teams. Team sums use xor-shuffle butterflies
// (every lane ends with the bitwise same value, since fp addition is commutative) and, for teams
// wider than a warp, a fixed-order sum of the warps' values through shared memory behind a named
// barrier of the team (teams of one block do not wait for each other).
// Loads are plain (not __ldg) because some of these ops write in place (dlogits over logits).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kat/core/dtype.h"
#include "kat/core/error.h"
#include "ops/cuda/vec_io.cuh"

namespace kat::cuda::rowops {
using namespace vecio;

constexpr int kThreads = 256;  // block size of the elementwise kernels and of narrow teams
constexpr int kMaxTPR = 1024;  // widest team (one block)
constexpr int kFwdVPT = 4;     // vectors per thread, register-resident rows (LayerNorm fwd, xent)

// ---- element access ----------------------------------------------------------------------------
// Element offset `off` of a storage-typed tensor; (off * bytes) must be 16-byte aligned for VEC>1.
template <DType S, int VEC>
__device__ __forceinline__ Raw<S, VEC> load_raw(const void* base, int64_t off) {
  if constexpr (S == DType::F32)
    return *reinterpret_cast<const Raw<S, VEC>*>(static_cast<const float*>(base) + off);
  else
    return *reinterpret_cast<const Raw<S, VEC>*>(static_cast<const unsigned short*>(base) + off);
}

// VEC consecutive fp32 values (16-byte aligned when VEC > 1).
template <int VEC>
__device__ __forceinline__ void load_f32(const float* p, float (&v)[VEC]) {
  if constexpr (VEC == 1) {
    v[0] = __ldg(p);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; i += 4) {
      const float4 t = __ldg(reinterpret_cast<const float4*>(p + i));
      v[i] = t.x, v[i + 1] = t.y, v[i + 2] = t.z, v[i + 3] = t.w;
    }
  }
}

// ---- team reductions -----------------------------------------------------------------------------
// All threads of a team must call these the same number of times (a barrier of the team when
// TPR > 32: named barrier 1 + team when the block holds several teams, else __syncthreads).
// `red` is shared scratch of (2 *) blockDim/32 floats; each team uses its own warps' slots.
template <int TPR>
constexpr int block_threads() {
  return TPR > kThreads ? TPR : kThreads;
}
template <int TPR>
__device__ __forceinline__ void team_barrier() {
  if constexpr (TPR >= block_threads<TPR>()) {
    __syncthreads();
  } else {
    asm volatile("bar.sync %0, %1;" ::"r"(static_cast<int>(threadIdx.x / TPR) + 1), "n"(TPR) : "memory");
  }
}
// Reduction over a team of TPR threads (shuffles, then the team's warps through `red` in order),
// every thread of the team gets the result.
struct SumOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
template <int TPR, typename Op>
__device__ __forceinline__ float team_reduce(float v, float* red, Op op) {
  constexpr int W = TPR < 32 ? TPR : 32;
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  if constexpr (TPR > 32) {
    constexpr int NW = TPR / 32;
    const int first = static_cast<int>(threadIdx.x / TPR) * NW;
    team_barrier<TPR>();  // earlier readers of red are done
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    team_barrier<TPR>();
    float s = red[first];
#pragma unroll
    for (int i = 1; i < NW; ++i) s = op(s, red[first + i]);
    v = s;
  }
  return v;
}
template <int TPR>
__device__ __forceinline__ float team_sum(float v, float* red) {
  return team_reduce<TPR>(v, red, SumOp{});
}
template <int TPR>
__device__ __forceinline__ float team_max(float v, float* red) {
  return team_reduce<TPR>(v, red, MaxOp{});
}

// Where a thread of a team-per-row kernel sits: its lane in the team and its team's row (valid:
// row < rows), the row's vector count and first element.
struct TeamRow {
  int lane;
  int64_t row;
  bool valid;
  int nvec;
  int64_t base;
};
template <int TPR>
__device__ __forceinline__ TeamRow team_row(int64_t rows, int C, int vec) {
  constexpr int TEAMS = block_threads<TPR>() / TPR;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * TEAMS + threadIdx.x / TPR;
  return {static_cast<int>(threadIdx.x % TPR), row, row < rows, C / vec, row * C};
}

// Register-resident row of a team-per-row kernel: vectors lane, lane + TPR, ... of the row at
// `base` (zeros past the row's nvec vectors and for invalid rows).
template <DType S, int VEC, int TPR, int VPT>
__device__ __forceinline__ void load_team_row(Raw<S, VEC> (&raw)[VPT], const void* src, int64_t base, int lane,
                                              int nvec, bool valid) {
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    raw[k] = Raw<S, VEC>{};
    const int iv = lane + k * TPR;
    if (valid && iv < nvec) raw[k] = load_raw<S, VEC>(src, base + static_cast<int64_t>(iv) * VEC);
  }
}

template <int TPR>
__device__ __forceinline__ void team_sum2(float& a, float& b, float* red) {
  constexpr int W = TPR < 32 ? TPR : 32;
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1) {
    a += __shfl_xor_sync(0xffffffffu, a, o);
    b += __shfl_xor_sync(0xffffffffu, b, o);
  }
  if constexpr (TPR > 32) {
    constexpr int NW = TPR / 32;
    constexpr int BW = (TPR > kThreads ? TPR : kThreads) / 32;  // warps per block
    const int first = static_cast<int>(threadIdx.x / TPR) * NW;
    team_barrier<TPR>();
    if ((threadIdx.x & 31) == 0) {
      red[threadIdx.x >> 5] = a;
      red[BW + (threadIdx.x >> 5)] = b;
    }
    team_barrier<TPR>();
    float sa = red[first], sb = red[BW + first];
#pragma unroll
    for (int i = 1; i < NW; ++i) {
      sa += red[first + i];
      sb += red[BW + first + i];
    }
    a = sa;
    b = sb;
  }
}

// ---- host: team size ----------------------------------------------------------------------------
// Smallest power-of-two team (>= 4) holding nvec vectors with at most vpt per thread.
inline int choose_tpr(int64_t nvec, int vpt) {
  int t = 4;
  while (static_cast<int64_t>(t) * vpt < nvec) t *= 2;
  return t;
}

template <typename Fn>
void dispatch_tpr(int tpr, Fn&& fn) {
  switch (tpr) {
    case 4: fn(std::integral_constant<int, 4>{}); break;
    case 8: fn(std::integral_constant<int, 8>{}); break;
    case 16: fn(std::integral_constant<int, 16>{}); break;
    case 32: fn(std::integral_constant<int, 32>{}); break;
    case 64: fn(std::integral_constant<int, 64>{}); break;
    case 128: fn(std::integral_constant<int, 128>{}); break;
    case 256: fn(std::integral_constant<int, 256>{}); break;
    case 512: fn(std::integral_constant<int, 512>{}); break;
    case 1024: fn(std::integral_constant<int, 1024>{}); break;
    default: KAT_ASSERT(false);
  }
}

}  // namespace kat::cuda::rowops
