// CUDA small ops: LayerNorm, exact GELU, softmax cross-entropy, drop-path residual, AdamW, EMA.
// Contracts in ops_cuda.h; measurements and tolerances in bench/OPS_CUDA.md.
//
// Row ops (LayerNorm, cross-entropy) use "teams": TPR consecutive threads (a power of two, 4 to
// 1024) own one row and keep it in registers as raw 16-byte vectors (8 bf16 / 4 fp32; scalars on
// the fallback path), at most VPT vectors per thread; TPR is the smallest team that fits the row.
// A block of max(TPR, 256) threads holds 256/TPR teams. Team sums use xor-shuffle butterflies
// (every lane ends with the bitwise same value, since fp addition is commutative) and, for teams
// wider than a warp, a fixed-order sum of the warps' values through shared memory behind a named
// barrier of the team (teams of one block do not wait for each other).
//
// LayerNorm backward, dgamma/dbeta (deterministic, no atomics):
//   stage 1: a persistent grid of sm_count * max(1, TPS/BT) blocks (TPS = KAT_OPS_LN_BWD_TPS = 768
//            resident threads per SM); team j of the grid handles rows
//            j, j + teams, ...; each thread accumulates dy*xhat and dy for its own columns in
//            registers, the teams of a block are summed in team order in shared memory, and the
//            block writes its row of the partial table ws[block][2C] (dgamma | dbeta);
//   stage 2: 32 columns per block, 16 warps each summing a fixed stride of the table's rows, then
//            warp 0 sums the 16 values in order and adds to dgamma/dbeta.
// The grid depends only on (rows, C, vector path, SM count), so the order of every sum is fixed.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/error.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/vec_io.cuh"
#include "ops/cuda/ops_cuda.h"

namespace kat::cuda {
namespace {
using namespace vecio;

// LayerNorm backward tunables (-D for benchmark variants; defaults measured, bench/OPS_CUDA.md):
// resident threads per SM of stage 1 (sets the register cap and the persistent grid), vectors
// per thread on the 16-byte path, and whether the next row is loaded before the current one is
// reduced (software pipeline).
#ifndef KAT_OPS_LN_BWD_TPS
#define KAT_OPS_LN_BWD_TPS 768
#endif
#ifndef KAT_OPS_LN_BWD_VPT
#define KAT_OPS_LN_BWD_VPT 2
#endif
#ifndef KAT_OPS_LN_BWD_PREFETCH
#define KAT_OPS_LN_BWD_PREFETCH 0
#endif

constexpr int kThreads = 256;        // block size of the elementwise kernels and of narrow teams
constexpr int kMaxTPR = 1024;        // widest team (one block)
constexpr int kLnMaxC = 4096;        // LayerNorm row width limit (contract)
constexpr int kFwdVPT = 4;           // vectors per thread, register-resident rows (fwd, xent)
constexpr int kBwdThreadsPerSM = KAT_OPS_LN_BWD_TPS;  // LayerNorm backward stage 1, per SM
constexpr bool kBwdPrefetch = KAT_OPS_LN_BWD_PREFETCH != 0;
template <int VEC>
constexpr int kBwdVPT = VEC == 1 ? 4 : KAT_OPS_LN_BWD_VPT;
constexpr int kS2Warps = 16;         // LayerNorm backward stage 2: warps per block


// ---- element access ----------------------------------------------------------------------------

// Element offset `off` of a storage-typed tensor; (off * bytes) must be 16-byte aligned for VEC>1.
template <Storage S, int VEC>
__device__ __forceinline__ Raw<S, VEC> load_raw(const void* base, int64_t off) {
  if constexpr (S == Storage::F32)
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
    asm volatile("bar.sync %0, %1;" ::"r"(static_cast<int>(threadIdx.x / TPR) + 1), "n"(TPR)
                 : "memory");
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
template <Storage S, int VEC, int TPR, int VPT>
__device__ __forceinline__ void load_team_row(Raw<S, VEC> (&raw)[VPT], const void* src, int64_t base,
                                              int lane, int nvec, bool valid) {
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

template <int TPR>
constexpr int bwd_min_blocks() {
  return kBwdThreadsPerSM / block_threads<TPR>() > 0 ? kBwdThreadsPerSM / block_threads<TPR>() : 1;
}

// ---- LayerNorm forward ---------------------------------------------------------------------------
template <Storage S, int VEC, int TPR>
__global__ void __launch_bounds__(block_threads<TPR>())
    ln_fwd_kernel(int64_t rows, int C, float eps, const void* x, const float* __restrict__ gamma,
                  const float* __restrict__ beta, void* y, float* __restrict__ mean,
                  float* __restrict__ rstd) {
  constexpr int BT = block_threads<TPR>();
  constexpr int VPT = kFwdVPT;
  __shared__ float red[BT / 32];
  griddep_wait();
  griddep_launch_dependents();
  const auto [lane, row, valid, nvec, base] = team_row<TPR>(rows, C, VEC);

  Raw<S, VEC> raw[VPT];
  load_team_row<S, VEC, TPR, VPT>(raw, x, base, lane, nvec, valid);
  float s = 0.f;
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    float v[VEC];
    unpack<S, VEC>(raw[k], v);  // zeros outside the row
#pragma unroll
    for (int e = 0; e < VEC; ++e) s += v[e];
  }
  s = team_sum<TPR>(s, red);
  const float mu = s / static_cast<float>(C);
  float q = 0.f;
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    if (lane + k * TPR < nvec) {
      float v[VEC];
      unpack<S, VEC>(raw[k], v);
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const float d = v[e] - mu;
        q = fmaf(d, d, q);
      }
    }
  }
  q = team_sum<TPR>(q, red);
  const float rs = 1.0f / sqrtf(q / static_cast<float>(C) + eps);
  if (!valid) return;  // no barrier below
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    const int iv = lane + k * TPR;
    if (iv < nvec) {
      float v[VEC], g[VEC], b[VEC], o[VEC];
      unpack<S, VEC>(raw[k], v);
      load_f32<VEC>(gamma + iv * VEC, g);
      load_f32<VEC>(beta + iv * VEC, b);
#pragma unroll
      for (int e = 0; e < VEC; ++e) o[e] = fmaf((v[e] - mu) * rs, g[e], b[e]);
      store_vec<S, VEC>(y, base + static_cast<int64_t>(iv) * VEC, o);
    }
  }
  if (lane == 0) {
    mean[row] = mu;
    rstd[row] = rs;
  }
}

// ---- LayerNorm backward, stage 1 -----------------------------------------------------------------
// Loads one row's vectors of x, dy, dx_acc and its statistics (zeros past the rows / the row).
template <Storage S, int VEC, int TPR, int VPT>
__device__ __forceinline__ void ln_bwd_load(int64_t row, int64_t rows, int C, int lane,
                                            const void* x, const void* dy, const void* dx_acc,
                                            const float* mean, const float* rstd,
                                            Raw<S, VEC> (&rx)[VPT], Raw<S, VEC> (&rg)[VPT],
                                            Raw<S, VEC> (&ra)[VPT], float& mu, float& rs) {
  const bool valid = row < rows;
  const int nvec = C / VEC;
  const int64_t base = row * C;
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    rx[k] = rg[k] = ra[k] = Raw<S, VEC>{};
    const int iv = lane + k * TPR;
    if (valid && iv < nvec) {
      const int64_t off = base + static_cast<int64_t>(iv) * VEC;
      rx[k] = load_raw<S, VEC>(x, off);
      rg[k] = load_raw<S, VEC>(dy, off);
      ra[k] = load_raw<S, VEC>(dx_acc, off);
    }
  }
  mu = valid ? __ldg(mean + row) : 0.f;
  rs = valid ? __ldg(rstd + row) : 0.f;
}

template <Storage S, int VEC, int TPR>
__global__ void __launch_bounds__(block_threads<TPR>(), bwd_min_blocks<TPR>())
    ln_bwd_kernel(int64_t rows, int C, const void* x, const float* __restrict__ gamma,
                  const float* __restrict__ mean, const float* __restrict__ rstd, const void* dy,
                  void* dx_acc, float* __restrict__ partial) {
  constexpr int BT = block_threads<TPR>();
  constexpr int TEAMS = BT / TPR;
  constexpr int VPT = kBwdVPT<VEC>;
  extern __shared__ float colsum[];  // 2*C floats, used when TEAMS > 1
  __shared__ float red[2 * (BT / 32)];
  griddep_wait();
  griddep_launch_dependents();
  const int lane = static_cast<int>(threadIdx.x % TPR);
  const int team = static_cast<int>(threadIdx.x / TPR);
  const int64_t nteams = static_cast<int64_t>(gridDim.x) * TEAMS;
  const int64_t team_g = static_cast<int64_t>(blockIdx.x) * TEAMS + team;
  const int64_t iters = (rows + nteams - 1) / nteams;  // uniform over the block
  const int nvec = C / VEC;

  float ag[VPT][VEC], ab[VPT][VEC];
#pragma unroll
  for (int k = 0; k < VPT; ++k)
#pragma unroll
    for (int e = 0; e < VEC; ++e) ag[k][e] = ab[k][e] = 0.f;

  Raw<S, VEC> rx[VPT], rg[VPT], ra[VPT];
  float mu = 0.f, rs = 0.f;
  if constexpr (kBwdPrefetch)
    ln_bwd_load<S, VEC, TPR, VPT>(team_g, rows, C, lane, x, dy, dx_acc, mean, rstd, rx, rg, ra, mu, rs);
  for (int64_t it = 0; it < iters; ++it) {
    const int64_t row = team_g + it * nteams;
    const bool valid = row < rows;
    const int64_t base = row * C;
    Raw<S, VEC> nx[VPT], ng[VPT], na[VPT];
    float nmu = 0.f, nrs = 0.f;
    if constexpr (kBwdPrefetch)  // next row's loads in flight while this one is reduced
      ln_bwd_load<S, VEC, TPR, VPT>(row + nteams, rows, C, lane, x, dy, dx_acc, mean, rstd, nx, ng,
                                    na, nmu, nrs);
    else
      ln_bwd_load<S, VEC, TPR, VPT>(row, rows, C, lane, x, dy, dx_acc, mean, rstd, rx, rg, ra, mu, rs);
    // dxh = dy * gamma rounded once (no FMA contraction into the sums below), so that
    // dxh - mean(dxh) cancels exactly where it should (C = 1, constant rows).
    float s1 = 0.f, s2 = 0.f;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int iv = lane + k * TPR;
      if (iv < nvec) {
        float xv[VEC], gv[VEC], gm[VEC];
        unpack<S, VEC>(rx[k], xv);
        unpack<S, VEC>(rg[k], gv);
        load_f32<VEC>(gamma + iv * VEC, gm);
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const float xh = (xv[e] - mu) * rs, dxh = __fmul_rn(gv[e], gm[e]);
          s1 += dxh;
          s2 = fmaf(dxh, xh, s2);
          ag[k][e] = fmaf(gv[e], xh, ag[k][e]);
          ab[k][e] += gv[e];
        }
      }
    }
    team_sum2<TPR>(s1, s2, red);
    s1 = s1 / static_cast<float>(C);
    s2 = s2 / static_cast<float>(C);
    if (valid) {
#pragma unroll
      for (int k = 0; k < VPT; ++k) {
        const int iv = lane + k * TPR;
        if (iv < nvec) {
          float xv[VEC], gv[VEC], gm[VEC], av[VEC];
          unpack<S, VEC>(rx[k], xv);
          unpack<S, VEC>(rg[k], gv);
          unpack<S, VEC>(ra[k], av);
          load_f32<VEC>(gamma + iv * VEC, gm);
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            const float xh = (xv[e] - mu) * rs;
            av[e] += rs * ((__fmul_rn(gv[e], gm[e]) - s1) - xh * s2);
          }
          store_vec<S, VEC>(dx_acc, base + static_cast<int64_t>(iv) * VEC, av);
        }
      }
    }
    if constexpr (kBwdPrefetch) {
#pragma unroll
      for (int k = 0; k < VPT; ++k) {
        rx[k] = nx[k];
        rg[k] = ng[k];
        ra[k] = na[k];
      }
      mu = nmu;
      rs = nrs;
    }
  }

  // Block partials: teams summed in team order, one row of the table per block.
  float* out = partial + static_cast<int64_t>(blockIdx.x) * 2 * C;
  if constexpr (TEAMS == 1) {
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int iv = lane + k * TPR;
      if (iv < nvec) {
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          out[iv * VEC + e] = ag[k][e];
          out[C + iv * VEC + e] = ab[k][e];
        }
      }
    }
  } else {
    for (int t = 0; t < TEAMS; ++t) {
      if (team == t) {
#pragma unroll
        for (int k = 0; k < VPT; ++k) {
          const int iv = lane + k * TPR;
          if (iv < nvec) {
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
              const int c = iv * VEC + e;
              colsum[c] = t == 0 ? ag[k][e] : colsum[c] + ag[k][e];
              colsum[C + c] = t == 0 ? ab[k][e] : colsum[C + c] + ab[k][e];
            }
          }
        }
      }
      __syncthreads();
    }
    for (int i = threadIdx.x; i < 2 * C; i += BT) out[i] = colsum[i];
  }
}

// ---- LayerNorm backward, stage 2 -----------------------------------------------------------------
__global__ void __launch_bounds__(kS2Warps * 32)
    ln_bwd_stage2(const float* __restrict__ partial, int nblocks, int C, float* dgamma,
                  float* dbeta) {
  __shared__ float sm[kS2Warps][33];
  griddep_wait();
  griddep_launch_dependents();
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int ncol = 2 * C;
  const int col = blockIdx.x * 32 + lane;
  float s = 0.f;
  if (col < ncol) {
#pragma unroll 4
    for (int b = w; b < nblocks; b += kS2Warps) s += partial[static_cast<int64_t>(b) * ncol + col];
  }
  sm[w][lane] = s;
  __syncthreads();
  if (w == 0 && col < ncol) {
    float t = sm[0][lane];
#pragma unroll
    for (int i = 1; i < kS2Warps; ++i) t += sm[i][lane];
    float* o = col < C ? dgamma + col : dbeta + (col - C);
    *o += t;
  }
}

// ---- GELU ----------------------------------------------------------------------------------------
constexpr float kRsqrt2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;

__device__ __forceinline__ float gelu_f(float v) { return 0.5f * v * (1.0f + erff(v * kRsqrt2)); }
__device__ __forceinline__ float gelu_grad(float v, float g) {
  const float cdf = 0.5f * (1.0f + erff(v * kRsqrt2));
  const float pdf = kInvSqrt2Pi * expf(-0.5f * v * v);
  return g * fmaf(v, pdf, cdf);
}

constexpr int kEwUnroll = 2;  // vectors per thread (all loaded before use)

// Elementwise over n values: vectors [0, n/VEC) by the grid, the tail (n % VEC) by block 0.
template <Storage S, int VEC, bool BWD>
__global__ void __launch_bounds__(kThreads)
    gelu_kernel(int64_t n, const void* x, const void* dy, void* out) {
  griddep_wait();
  griddep_launch_dependents();
  const int64_t nvec = n / VEC;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kThreads * kEwUnroll + threadIdx.x;
  Raw<S, VEC> rx[kEwUnroll], rg[kEwUnroll];
#pragma unroll
  for (int u = 0; u < kEwUnroll; ++u) {
    const int64_t i = i0 + u * kThreads;
    if (i < nvec) {
      rx[u] = load_raw<S, VEC>(x, i * VEC);
      if constexpr (BWD) rg[u] = load_raw<S, VEC>(dy, i * VEC);
    }
  }
#pragma unroll
  for (int u = 0; u < kEwUnroll; ++u) {
    const int64_t i = i0 + u * kThreads;
    if (i < nvec) {
      float v[VEC], o[VEC];
      unpack<S, VEC>(rx[u], v);
      if constexpr (BWD) {
        float g[VEC];
        unpack<S, VEC>(rg[u], g);
#pragma unroll
        for (int e = 0; e < VEC; ++e) o[e] = gelu_grad(v[e], g[e]);
      } else {
#pragma unroll
        for (int e = 0; e < VEC; ++e) o[e] = gelu_f(v[e]);
      }
      store_vec<S, VEC>(out, i * VEC, o);
    }
  }
  if (VEC > 1 && blockIdx.x == 0) {
    for (int64_t j = nvec * VEC + threadIdx.x; j < n; j += kThreads) {
      float v[1], o[1];
      unpack<S, 1>(load_raw<S, 1>(x, j), v);
      if constexpr (BWD) {
        float g[1];
        unpack<S, 1>(load_raw<S, 1>(dy, j), g);
        o[0] = gelu_grad(v[0], g[0]);
      } else {
        o[0] = gelu_f(v[0]);
      }
      store_vec<S, 1>(out, j, o);
    }
  }
}

// ---- softmax cross-entropy -----------------------------------------------------------------------
// Register-resident rows (team per row).
template <Storage S, int VEC, int TPR>
__global__ void __launch_bounds__(block_threads<TPR>())
    xent_kernel(int64_t B, int K, const void* logits, const float* __restrict__ target, float ls,
                void* dlogits, float* __restrict__ row_loss) {
  constexpr int BT = block_threads<TPR>();
  constexpr int VPT = kFwdVPT;
  __shared__ float red[BT / 32];
  griddep_wait();
  griddep_launch_dependents();
  const auto [lane, row, valid, nvec, base] = team_row<TPR>(B, K, VEC);
  Raw<S, VEC> raw[VPT];
  load_team_row<S, VEC, TPR, VPT>(raw, logits, base, lane, nvec, valid);
  float mx = -INFINITY;
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    if (lane + k * TPR < nvec) {
      float v[VEC];
      unpack<S, VEC>(raw[k], v);
#pragma unroll
      for (int e = 0; e < VEC; ++e) mx = fmaxf(mx, v[e]);
    }
  }
  mx = team_max<TPR>(mx, red);
  float se = 0.f;
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    if (lane + k * TPR < nvec) {
      float v[VEC];
      unpack<S, VEC>(raw[k], v);
#pragma unroll
      for (int e = 0; e < VEC; ++e) se += expf(v[e] - mx);
    }
  }
  se = team_sum<TPR>(se, red);
  const float lse = mx + logf(se);
  const float oml = 1.0f - ls, lsk = ls / static_cast<float>(K), fB = static_cast<float>(B);
  float l = 0.f;
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    const int iv = lane + k * TPR;
    if (valid && iv < nvec) {
      float v[VEC], t[VEC], o[VEC];
      unpack<S, VEC>(raw[k], v);
      load_f32<VEC>(target + base + static_cast<int64_t>(iv) * VEC, t);
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const float tk = fmaf(oml, t[e], lsk);
        l = fmaf(tk, lse - v[e], l);
        o[e] = (expf(v[e] - lse) - tk) / fB;
      }
      if (dlogits) store_vec<S, VEC>(dlogits, base + static_cast<int64_t>(iv) * VEC, o);
    }
  }
  l = team_sum<TPR>(l, red);
  if (valid && lane == 0) row_loss[row] = l;
}

// Rows too wide for registers: one block of 1024 per row, three passes over global memory.
template <Storage S>
__global__ void __launch_bounds__(kMaxTPR)
    xent_loop_kernel(int64_t B, int K, const void* logits, const float* __restrict__ target,
                     float ls, void* dlogits, float* __restrict__ row_loss) {
  __shared__ float red[kMaxTPR / 32];
  griddep_wait();
  griddep_launch_dependents();
  const int64_t row = blockIdx.x;
  const int64_t base = row * K;
  auto z = [&](int k) {
    float v[1];
    unpack<S, 1>(load_raw<S, 1>(logits, base + k), v);
    return v[0];
  };
  float mx = -INFINITY;
  for (int k = threadIdx.x; k < K; k += kMaxTPR) mx = fmaxf(mx, z(k));
  mx = team_max<kMaxTPR>(mx, red);
  float se = 0.f;
  for (int k = threadIdx.x; k < K; k += kMaxTPR) se += expf(z(k) - mx);
  se = team_sum<kMaxTPR>(se, red);
  const float lse = mx + logf(se);
  const float oml = 1.0f - ls, lsk = ls / static_cast<float>(K), fB = static_cast<float>(B);
  float l = 0.f;
  for (int k = threadIdx.x; k < K; k += kMaxTPR) {
    const float v = z(k);
    const float tk = fmaf(oml, __ldg(target + base + k), lsk);
    l = fmaf(tk, lse - v, l);
    if (dlogits) {
      const float o[1] = {(expf(v - lse) - tk) / fB};
      store_vec<S, 1>(dlogits, base + k, o);
    }
  }
  l = team_sum<kMaxTPR>(l, red);
  if (threadIdx.x == 0) row_loss[row] = l;
}

// Mean of the row losses: one block, fixed-order double sums.
__global__ void __launch_bounds__(kMaxTPR) mean_kernel(int64_t B, const float* row_loss, float* loss) {
  __shared__ double sm[kMaxTPR];
  griddep_wait();
  griddep_launch_dependents();
  double s = 0;
  for (int64_t i = threadIdx.x; i < B; i += kMaxTPR) s += static_cast<double>(row_loss[i]);
  sm[threadIdx.x] = s;
  __syncthreads();
  for (int o = kMaxTPR / 2; o > 0; o >>= 1) {
    if (static_cast<int>(threadIdx.x) < o) sm[threadIdx.x] += sm[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) *loss = static_cast<float>(sm[0] / static_cast<double>(B));
}

// ---- residual with drop-path / scale_rows --------------------------------------------------------
// grid.y walks the samples, grid.x the vectors of a sample. RESID: y = x + s f; else y = s x.
template <Storage S, int VEC, bool RESID>
__global__ void __launch_bounds__(kThreads)
    residual_kernel(int64_t B, int64_t per_sample, const void* x, const void* f,
                    const float* __restrict__ scale, void* y) {
  griddep_wait();
  griddep_launch_dependents();
  const int64_t nvec = per_sample / VEC;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    const float s = scale ? __ldg(scale + b) : 1.0f;
    const int64_t base = b * per_sample;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < nvec;
         i += static_cast<int64_t>(gridDim.x) * kThreads) {
      const int64_t off = base + i * VEC;
      float xv[VEC], o[VEC];
      unpack<S, VEC>(load_raw<S, VEC>(x, off), xv);
      if constexpr (RESID) {
        float fv[VEC];
        unpack<S, VEC>(load_raw<S, VEC>(f, off), fv);
#pragma unroll
        for (int e = 0; e < VEC; ++e) o[e] = fmaf(s, fv[e], xv[e]);
      } else {
#pragma unroll
        for (int e = 0; e < VEC; ++e) o[e] = s * xv[e];
      }
      store_vec<S, VEC>(y, off, o);
    }
  }
}

// ---- AdamW / EMA ---------------------------------------------------------------------------------
// Explicitly rounded operations (no FMA contraction), in kat::AdamW::step's order.
__device__ __forceinline__ float adamw_elem(const AdamWScalars& s, float p, float g, float& m,
                                            float& v, bool decay) {
  if (decay) p = __fsub_rn(p, __fmul_rn(s.wd, p));
  m = __fadd_rn(__fmul_rn(s.b1, m), __fmul_rn(s.one_m_b1, g));
  v = __fadd_rn(__fmul_rn(s.b2, v), __fmul_rn(__fmul_rn(s.one_m_b2, g), g));
  const float den = __fadd_rn(__fmul_rn(__fsqrt_rn(v), s.inv_sqrt_bc2), s.eps);
  return __fsub_rn(p, __fdiv_rn(__fmul_rn(s.step_size, m), den));
}

template <int VEC>
__global__ void __launch_bounds__(kThreads)
    adamw_kernel(int64_t n, AdamWScalars s, float* p, const float* __restrict__ g, float* m,
                 float* v, const uint8_t* __restrict__ mask, unsigned short* pbf) {
  griddep_wait();
  griddep_launch_dependents();
  const int64_t nvec = n / VEC;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if constexpr (VEC == 4) {
    if (i < nvec) {
      float4 pv = reinterpret_cast<const float4*>(p)[i];
      const float4 gv = __ldg(reinterpret_cast<const float4*>(g) + i);
      float4 mv = reinterpret_cast<const float4*>(m)[i];
      float4 vv = reinterpret_cast<const float4*>(v)[i];
      uint32_t mk = 0;
      if (mask) mk = __ldg(reinterpret_cast<const uint32_t*>(mask) + i);
      pv.x = adamw_elem(s, pv.x, gv.x, mv.x, vv.x, (mk & 0xffu) != 0);
      pv.y = adamw_elem(s, pv.y, gv.y, mv.y, vv.y, (mk & 0xff00u) != 0);
      pv.z = adamw_elem(s, pv.z, gv.z, mv.z, vv.z, (mk & 0xff0000u) != 0);
      pv.w = adamw_elem(s, pv.w, gv.w, mv.w, vv.w, (mk & 0xff000000u) != 0);
      reinterpret_cast<float4*>(p)[i] = pv;
      reinterpret_cast<float4*>(m)[i] = mv;
      reinterpret_cast<float4*>(v)[i] = vv;
      if (pbf)
        reinterpret_cast<uint2*>(pbf)[i] = make_uint2(pack_bf16x2(pv.x, pv.y), pack_bf16x2(pv.z, pv.w));
    }
  }
  // Scalars: every element (VEC == 1) or the tail (block 0).
  int64_t j = VEC == 1 ? i : nvec * VEC + threadIdx.x;
  const int64_t stride = VEC == 1 ? n : kThreads;  // VEC == 1: one element per thread
  if (VEC > 1 && blockIdx.x != 0) return;
  for (; j < n; j += stride) {
    float mj = m[j], vj = v[j];
    const float pj = adamw_elem(s, p[j], g[j], mj, vj, mask && mask[j] != 0);
    p[j] = pj;
    m[j] = mj;
    v[j] = vj;
    if (pbf) pbf[j] = to_bf16(pj);
  }
}

template <int VEC>
__global__ void __launch_bounds__(kThreads)
    ema_kernel(int64_t n, float d, float r, float* ema, const float* __restrict__ p) {
  griddep_wait();
  griddep_launch_dependents();
  const int64_t nvec = n / VEC;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if constexpr (VEC == 4) {
    if (i < nvec) {
      float4 e = reinterpret_cast<const float4*>(ema)[i];
      const float4 q = __ldg(reinterpret_cast<const float4*>(p) + i);
      e.x = __fadd_rn(__fmul_rn(d, e.x), __fmul_rn(r, q.x));
      e.y = __fadd_rn(__fmul_rn(d, e.y), __fmul_rn(r, q.y));
      e.z = __fadd_rn(__fmul_rn(d, e.z), __fmul_rn(r, q.z));
      e.w = __fadd_rn(__fmul_rn(d, e.w), __fmul_rn(r, q.w));
      reinterpret_cast<float4*>(ema)[i] = e;
    }
  }
  int64_t j = VEC == 1 ? i : nvec * VEC + threadIdx.x;
  const int64_t stride = VEC == 1 ? n : kThreads;
  if (VEC > 1 && blockIdx.x != 0) return;
  for (; j < n; j += stride) ema[j] = __fadd_rn(__fmul_rn(d, ema[j]), __fmul_rn(r, p[j]));
}

// ---- host helpers --------------------------------------------------------------------------------
int sm_count() {
  static std::atomic<int> cache[64] = {};
  int dev = 0;
  KAT_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev >= 0 && dev < 64) {
    const int c = cache[dev].load(std::memory_order_relaxed);
    if (c > 0) return c;
  }
  int n = 0;
  KAT_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  KAT_ASSERT(n > 0);
  if (dev >= 0 && dev < 64) cache[dev].store(n, std::memory_order_relaxed);
  return n;
}

// Launch with programmatic stream serialization (see griddep_wait).
template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, int block, size_t smem, cudaStream_t stream,
            Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(static_cast<unsigned>(block));
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  KAT_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...));
}

bool al16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
bool al(const void* p, uintptr_t a) { return p == nullptr || (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }

// Smallest power-of-two team (>= 4) holding nvec vectors with at most vpt per thread.
int choose_tpr(int64_t nvec, int vpt) {
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

// Calls fn(integral_constant<Storage>, integral_constant<int VEC>).
template <typename Fn>
void dispatch_storage_vec(Storage st, bool vec, Fn&& fn) {
  if (st == Storage::F32) {
    if (vec)
      fn(std::integral_constant<Storage, Storage::F32>{}, std::integral_constant<int, 4>{});
    else
      fn(std::integral_constant<Storage, Storage::F32>{}, std::integral_constant<int, 1>{});
  } else {
    if (vec)
      fn(std::integral_constant<Storage, Storage::BF16>{}, std::integral_constant<int, 8>{});
    else
      fn(std::integral_constant<Storage, Storage::BF16>{}, std::integral_constant<int, 1>{});
  }
}

int vec_of(Storage st) { return st == Storage::F32 ? 4 : 8; }

void check_storage(Storage st, const char* where) {
  KAT_CHECK(st == Storage::F32 || st == Storage::BF16, where, ": unknown storage type");
}

int64_t ln_bwd_blocks(int64_t rows, int tpr) {
  const int bt = std::max(tpr, kThreads);
  const int teams = bt / tpr;
  const int per_sm = std::max(1, kBwdThreadsPerSM / bt);
  return std::min<int64_t>((rows + teams - 1) / teams, static_cast<int64_t>(sm_count()) * per_sm);
}
int64_t ln_bwd_max_blocks(int64_t rows) {
  return std::min<int64_t>(rows,
                           static_cast<int64_t>(sm_count()) * std::max(1, kBwdThreadsPerSM / kThreads));
}

}  // namespace

// ==== LayerNorm =====================================================================================

void layernorm_forward(int64_t rows, int C, float eps, Storage st, const void* x,
                       const float* gamma, const float* beta, void* y, float* mean, float* rstd,
                       cudaStream_t stream) {
  constexpr const char* where = "layernorm_forward (cuda)";
  check_storage(st, where);
  KAT_CHECK(rows >= 0, where, ": rows must be >= 0, got ", rows);
  KAT_CHECK(C >= 1 && C <= kLnMaxC, where, ": C must be in [1, ", kLnMaxC, "], got ", C);
  KAT_CHECK(eps > 0.f, where, ": eps must be > 0");
  if (rows == 0) return;
  KAT_CHECK(x && gamma && beta && y && mean && rstd, where, ": null pointer");
  const bool vec = C % vec_of(st) == 0 && al16(x) && al16(y) && al16(gamma) && al16(beta);
  dispatch_storage_vec(st, vec, [&](auto S, auto V) {
    constexpr Storage s = decltype(S)::value;
    constexpr int VEC = decltype(V)::value;
    dispatch_tpr(choose_tpr(C / VEC, kFwdVPT), [&](auto T) {
      constexpr int TPR = decltype(T)::value;
      // Teams wider than any row of C <= kLnMaxC needs are never chosen: not instantiated.
      if constexpr (TPR > 4 && (TPR / 2) * kFwdVPT * VEC >= kLnMaxC) {
        KAT_ASSERT(false);
      } else {
        constexpr int BT = block_threads<TPR>();
        const int64_t teams = BT / TPR;
        const int64_t blocks = (rows + teams - 1) / teams;
        KAT_CHECK(blocks < (int64_t(1) << 31), where, ": too many rows");
        launch(ln_fwd_kernel<s, VEC, TPR>, dim3(static_cast<unsigned>(blocks)), BT, 0, stream,
               rows, C, eps, x, gamma, beta, y, mean, rstd);
      }
    });
  });
}

std::size_t layernorm_backward_workspace_bytes(int64_t rows, int C) {
  KAT_CHECK(rows >= 0, "layernorm_backward_workspace_bytes (cuda): rows must be >= 0");
  KAT_CHECK(C >= 1 && C <= kLnMaxC, "layernorm_backward_workspace_bytes (cuda): C must be in [1, ",
            kLnMaxC, "], got ", C);
  if (rows == 0) return 0;
  return static_cast<std::size_t>(ln_bwd_max_blocks(rows)) * 2 * static_cast<std::size_t>(C) *
         sizeof(float);
}

void layernorm_backward(int64_t rows, int C, Storage st, const void* x, const float* gamma,
                        const float* mean, const float* rstd, const void* dy, void* dx_acc,
                        float* dgamma, float* dbeta, void* workspace, cudaStream_t stream) {
  constexpr const char* where = "layernorm_backward (cuda)";
  check_storage(st, where);
  KAT_CHECK(rows >= 0, where, ": rows must be >= 0, got ", rows);
  KAT_CHECK(C >= 1 && C <= kLnMaxC, where, ": C must be in [1, ", kLnMaxC, "], got ", C);
  if (rows == 0) return;
  KAT_CHECK(x && gamma && mean && rstd && dy && dx_acc && dgamma && dbeta, where, ": null pointer");
  KAT_CHECK(workspace != nullptr, where,
            ": workspace is null (size it with layernorm_backward_workspace_bytes)");
  KAT_CHECK(al(workspace, 4), where, ": workspace must be 4-byte aligned");
  const bool vec = C % vec_of(st) == 0 && al16(x) && al16(dy) && al16(dx_acc) && al16(gamma);
  float* partial = static_cast<float*>(workspace);
  int64_t blocks = 0;
  dispatch_storage_vec(st, vec, [&](auto S, auto V) {
    constexpr Storage s = decltype(S)::value;
    constexpr int VEC = decltype(V)::value;
    constexpr int VPT = kBwdVPT<VEC>;
    const int tpr = choose_tpr(C / VEC, VPT);
    dispatch_tpr(tpr, [&](auto T) {
      constexpr int TPR = decltype(T)::value;
      if constexpr (TPR > 4 && (TPR / 2) * VPT * VEC >= kLnMaxC) {
        KAT_ASSERT(false);  // never chosen for C <= kLnMaxC: not instantiated
      } else {
        constexpr int BT = block_threads<TPR>();
        blocks = ln_bwd_blocks(rows, TPR);
        KAT_ASSERT(blocks <= ln_bwd_max_blocks(rows));
        const size_t smem = BT / TPR > 1 ? 2 * static_cast<size_t>(C) * sizeof(float) : 0;
        launch(ln_bwd_kernel<s, VEC, TPR>, dim3(static_cast<unsigned>(blocks)), BT, smem, stream,
               rows, C, x, gamma, mean, rstd, dy, dx_acc, partial);
      }
    });
  });
  const int ncol = 2 * C;
  launch(ln_bwd_stage2, dim3(static_cast<unsigned>((ncol + 31) / 32)), kS2Warps * 32, 0, stream,
         static_cast<const float*>(partial), static_cast<int>(blocks), C, dgamma, dbeta);
}

// ==== GELU ==========================================================================================

namespace {
void gelu_launch(bool bwd, int64_t n, Storage st, const void* x, const void* dy, void* out,
                 cudaStream_t stream) {
  const char* where = bwd ? "gelu_backward (cuda)" : "gelu_forward (cuda)";
  check_storage(st, where);
  KAT_CHECK(n >= 0, where, ": n must be >= 0, got ", n);
  if (n == 0) return;
  KAT_CHECK(x && out && (!bwd || dy), where, ": null pointer");
  const bool vec = al16(x) && al16(out) && (!bwd || al16(dy));
  dispatch_storage_vec(st, vec, [&](auto S, auto V) {
    constexpr Storage s = decltype(S)::value;
    constexpr int VEC = decltype(V)::value;
    const int64_t nvec = n / VEC;
    const int64_t per_block = static_cast<int64_t>(kThreads) * kEwUnroll;
    const int64_t blocks = std::max<int64_t>(1, (nvec + per_block - 1) / per_block);
    KAT_CHECK(blocks < (int64_t(1) << 31), where, ": n too large");
    if (bwd)
      launch(gelu_kernel<s, VEC, true>, dim3(static_cast<unsigned>(blocks)), kThreads, 0, stream,
             n, x, dy, out);
    else
      launch(gelu_kernel<s, VEC, false>, dim3(static_cast<unsigned>(blocks)), kThreads, 0, stream,
             n, x, static_cast<const void*>(nullptr), out);
  });
}
}  // namespace

void gelu_forward(int64_t n, Storage st, const void* x, void* y, cudaStream_t stream) {
  gelu_launch(false, n, st, x, nullptr, y, stream);
}
void gelu_backward(int64_t n, Storage st, const void* x, const void* dy, void* dx,
                   cudaStream_t stream) {
  gelu_launch(true, n, st, x, dy, dx, stream);
}

// ==== softmax cross-entropy =========================================================================

void softmax_xent(int64_t B, int K, Storage st, const void* logits, const float* target,
                  float label_smoothing, void* dlogits, float* row_loss, float* loss,
                  cudaStream_t stream) {
  constexpr const char* where = "softmax_xent (cuda)";
  check_storage(st, where);
  KAT_CHECK(B >= 0, where, ": B must be >= 0, got ", B);
  KAT_CHECK(K >= 1, where, ": K must be >= 1, got ", K);
  KAT_CHECK(label_smoothing >= 0.f && label_smoothing < 1.f, where,
            ": label_smoothing must be in [0, 1)");
  if (B == 0) return;
  KAT_CHECK(B < (int64_t(1) << 31), where, ": B too large");
  KAT_CHECK(logits && target && row_loss, where, ": null pointer");
  const bool vec = K % vec_of(st) == 0 && al16(logits) && al16(target) &&
                   (dlogits == nullptr || al16(dlogits));
  bool done = false;
  dispatch_storage_vec(st, vec, [&](auto S, auto V) {
    constexpr Storage s = decltype(S)::value;
    constexpr int VEC = decltype(V)::value;
    const int64_t nvec = K / VEC;
    if (nvec > static_cast<int64_t>(kMaxTPR) * kFwdVPT) return;  // too wide: loop kernel
    dispatch_tpr(choose_tpr(nvec, kFwdVPT), [&](auto T) {
      constexpr int TPR = decltype(T)::value;
      constexpr int BT = block_threads<TPR>();
      const int64_t teams = BT / TPR;
      launch(xent_kernel<s, VEC, TPR>, dim3(static_cast<unsigned>((B + teams - 1) / teams)), BT, 0,
             stream, B, K, logits, target, label_smoothing, dlogits, row_loss);
    });
    done = true;
  });
  if (!done) {
    if (st == Storage::F32)
      launch(xent_loop_kernel<Storage::F32>, dim3(static_cast<unsigned>(B)), kMaxTPR, 0, stream, B,
             K, logits, target, label_smoothing, dlogits, row_loss);
    else
      launch(xent_loop_kernel<Storage::BF16>, dim3(static_cast<unsigned>(B)), kMaxTPR, 0, stream,
             B, K, logits, target, label_smoothing, dlogits, row_loss);
  }
  if (loss)
    launch(mean_kernel, dim3(1), kMaxTPR, 0, stream, B, static_cast<const float*>(row_loss), loss);
}

// ==== residual / scale_rows =========================================================================

namespace {
void residual_launch(bool resid, int64_t B, int64_t per_sample, Storage st, const void* x,
                     const void* f, const float* scale, void* y, cudaStream_t stream) {
  const char* where = resid ? "residual_add (cuda)" : "scale_rows (cuda)";
  check_storage(st, where);
  KAT_CHECK(B >= 0 && per_sample >= 0, where, ": B and per_sample must be >= 0");
  if (B == 0 || per_sample == 0) return;
  KAT_CHECK(x && y && (!resid || f) && (resid || scale), where, ": null pointer");
  const bool vec = per_sample % vec_of(st) == 0 && al16(x) && al16(y) && (!resid || al16(f));
  dispatch_storage_vec(st, vec, [&](auto S, auto V) {
    constexpr Storage s = decltype(S)::value;
    constexpr int VEC = decltype(V)::value;
    const int64_t nvec = per_sample / VEC;
    const int64_t gx = std::min<int64_t>((nvec + kThreads - 1) / kThreads, 65535);
    const int64_t gy = std::min<int64_t>(B, 65535);
    const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
    if (resid)
      launch(residual_kernel<s, VEC, true>, grid, kThreads, 0, stream, B, per_sample, x, f, scale, y);
    else
      launch(residual_kernel<s, VEC, false>, grid, kThreads, 0, stream, B, per_sample, x,
             static_cast<const void*>(nullptr), scale, y);
  });
}
}  // namespace

void residual_add(int64_t B, int64_t per_sample, Storage st, const void* x, const void* f,
                  const float* scale, void* y, cudaStream_t stream) {
  residual_launch(true, B, per_sample, st, x, f, scale, y, stream);
}
void scale_rows(int64_t B, int64_t per_sample, Storage st, const float* scale, const void* x,
                void* y, cudaStream_t stream) {
  residual_launch(false, B, per_sample, st, x, nullptr, scale, y, stream);
}

// ==== optimizer =====================================================================================

AdamWScalars adamw_scalars(double lr, double beta1, double beta2, double eps, double weight_decay,
                           int64_t t) {
  KAT_CHECK(t >= 1, "adamw_scalars: step number must be >= 1, got ", t);
  AdamWScalars s;
  const double bc1 = 1.0 - std::pow(beta1, double(t)), bc2 = 1.0 - std::pow(beta2, double(t));
  s.b1 = float(beta1);
  s.b2 = float(beta2);
  s.one_m_b1 = 1.0f - s.b1;
  s.one_m_b2 = 1.0f - s.b2;
  s.step_size = float(lr / bc1);
  s.inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
  s.eps = float(eps);
  s.wd = float(lr * weight_decay);
  return s;
}

void adamw_step(int64_t n, const AdamWScalars& s, float* params, const float* grads, float* m,
                float* v, const uint8_t* decay_mask, void* params_bf16, cudaStream_t stream) {
  constexpr const char* where = "adamw_step (cuda)";
  KAT_CHECK(n >= 0, where, ": n must be >= 0, got ", n);
  if (n == 0) return;
  KAT_CHECK(params && grads && m && v, where, ": null pointer");
  const bool vec = al16(params) && al16(grads) && al16(m) && al16(v) && al(decay_mask, 4) &&
                   al(params_bf16, 8);
  auto* pbf = static_cast<unsigned short*>(params_bf16);
  if (vec) {
    const int64_t blocks = std::max<int64_t>(1, (n / 4 + kThreads - 1) / kThreads);
    launch(adamw_kernel<4>, dim3(static_cast<unsigned>(blocks)), kThreads, 0, stream, n, s, params,
           grads, m, v, decay_mask, pbf);
  } else {
    const int64_t blocks = (n + kThreads - 1) / kThreads;
    launch(adamw_kernel<1>, dim3(static_cast<unsigned>(blocks)), kThreads, 0, stream, n, s, params,
           grads, m, v, decay_mask, pbf);
  }
}

void ema_update(int64_t n, float* ema, const float* params, double decay, cudaStream_t stream) {
  constexpr const char* where = "ema_update (cuda)";
  KAT_CHECK(n >= 0, where, ": n must be >= 0, got ", n);
  if (n == 0) return;
  KAT_CHECK(ema && params, where, ": null pointer");
  const float d = float(decay), r = float(1.0 - decay);
  if (al16(ema) && al16(params)) {
    const int64_t blocks = std::max<int64_t>(1, (n / 4 + kThreads - 1) / kThreads);
    launch(ema_kernel<4>, dim3(static_cast<unsigned>(blocks)), kThreads, 0, stream, n, d, r, ema,
           params);
  } else {
    launch(ema_kernel<1>, dim3(static_cast<unsigned>((n + kThreads - 1) / kThreads)), kThreads, 0,
           stream, n, d, r, ema, params);
  }
}

}  // namespace kat::cuda
