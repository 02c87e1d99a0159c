// LayerNorm on CUDA. Contract in ops/cuda/layernorm.h (shapes: ops/layernorm.h); teams and plain
// loads in row_ops.cuh; measurements and tolerances in bench/records/OPS_CUDA.md.
//
// Forward: one team per row, the row register-resident; two-pass mean / biased variance.
// Backward, dgamma/dbeta (deterministic, no atomics):
//   stage 1: a persistent grid of sm_count * max(1, 768/BT) blocks (768 resident threads per SM,
//            kBwdThreadsPerSM); team j of the grid handles rows j, j + teams, ...; each thread
//            accumulates dy*xhat and dy for its own columns in registers, the teams of a block are
//            summed in team order in shared memory, and the block writes its row of the partial
//            table ws[block][2C] (dgamma | dbeta);
//   stage 2: 32 columns per block, 16 warps each summing a fixed stride of the table's rows, then
//            warp 0 sums the 16 values in order and adds to dgamma/dbeta.
// The grid depends only on (rows, C, vector path, SM count), so the order of every sum is fixed.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kat/core/error.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/launch.cuh"
#include "ops/cuda/layernorm.h"
#include "ops/cuda/row_ops.cuh"

namespace kat::cuda {
using namespace detail;
using namespace rowops;
namespace {

// LayerNorm backward, stage 1 (measured best, bench/records/OPS_CUDA.md): resident threads per SM (sets
// the register cap and the persistent grid) and vectors per thread on the 16-byte path. Rows are
// loaded one at a time (a software-pipelined variant that loads the next row first was no faster).
constexpr int kBwdThreadsPerSM = 768;
template <int VEC>
constexpr int kBwdVPT = VEC == 1 ? 4 : 2;
constexpr int kS2Warps = 16;  // stage 2: warps per block
constexpr int kLnMaxC = kLayerNormMaxC;

template <int TPR>
constexpr int bwd_min_blocks() {
  return kBwdThreadsPerSM / block_threads<TPR>() > 0 ? kBwdThreadsPerSM / block_threads<TPR>() : 1;
}

// ---- LayerNorm forward ---------------------------------------------------------------------------
template <DType S, int VEC, int TPR>
__global__ void __launch_bounds__(block_threads<TPR>())
    ln_fwd_kernel(int64_t rows, int C, float eps, const void* x, const float* __restrict__ gamma,
                  const float* __restrict__ beta, void* y, float* __restrict__ mean, float* __restrict__ rstd) {
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
template <DType S, int VEC, int TPR, int VPT>
__device__ __forceinline__ void ln_bwd_load(int64_t row, int64_t rows, int C, int lane, const void* x,
                                            const void* dy, const void* dx_acc, const float* mean,
                                            const float* rstd, Raw<S, VEC> (&rx)[VPT], Raw<S, VEC> (&rg)[VPT],
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

template <DType S, int VEC, int TPR>
__global__ void __launch_bounds__(block_threads<TPR>(), bwd_min_blocks<TPR>())
    ln_bwd_kernel(int64_t rows, int C, const void* x, const float* __restrict__ gamma,
                  const float* __restrict__ mean, const float* __restrict__ rstd, const void* dy, void* dx_acc,
                  float* __restrict__ partial) {
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
  for (int64_t it = 0; it < iters; ++it) {
    const int64_t row = team_g + it * nteams;
    const bool valid = row < rows;
    const int64_t base = row * C;
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
    ln_bwd_stage2(const float* __restrict__ partial, int nblocks, int C, float* dgamma, float* dbeta) {
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

int64_t ln_bwd_blocks(int64_t rows, int tpr) {
  const int bt = std::max(tpr, kThreads);
  const int teams = bt / tpr;
  const int per_sm = std::max(1, kBwdThreadsPerSM / bt);
  return std::min<int64_t>((rows + teams - 1) / teams, static_cast<int64_t>(sm_count()) * per_sm);
}
int64_t ln_bwd_max_blocks(int64_t rows) {
  return std::min<int64_t>(rows, static_cast<int64_t>(sm_count()) * std::max(1, kBwdThreadsPerSM / kThreads));
}

}  // namespace

void layernorm_forward(const LayerNormForwardArgs& a, cudaStream_t stream) {
  constexpr const char* where = "layernorm_forward (cuda)";
  const int64_t rows = a.rows;
  const int C = a.C;
  const float eps = a.eps;
  const DType st = a.dtype;
  const void* x = a.x;
  void* y = a.y;
  const float *gamma = a.gamma, *beta = a.beta;
  float *mean = a.mean, *rstd = a.rstd;
  check_dtype(st, where);
  kat::ops::check_layernorm_shape(rows, C, where);
  KAT_CHECK(C <= kLnMaxC, where, ": C must be in [1, ", kLnMaxC, "], got ", C);
  KAT_CHECK(eps > 0.f, where, ": eps must be > 0");
  if (rows == 0) return;
  KAT_CHECK(x && gamma && beta && y && mean && rstd, where, ": null pointer");
  const bool vec = C % vec_width(st) == 0 && al16(x) && al16(y) && al16(gamma) && al16(beta);
  dispatch_dtype_vec(st, vec, [&](auto S, auto V) {
    constexpr DType s = decltype(S)::value;
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
        launch(ln_fwd_kernel<s, VEC, TPR>, dim3(static_cast<unsigned>(blocks)), BT, 0, stream, rows, C, eps, x,
               gamma, beta, y, mean, rstd);
      }
    });
  });
}

std::size_t layernorm_backward_workspace_bytes(int64_t rows, int C) {
  constexpr const char* where = "layernorm_backward_workspace_bytes (cuda)";
  kat::ops::check_layernorm_shape(rows, C, where);
  KAT_CHECK(C <= kLnMaxC, where, ": C must be in [1, ", kLnMaxC, "], got ", C);
  if (rows == 0) return 0;
  return static_cast<std::size_t>(ln_bwd_max_blocks(rows)) * 2 * static_cast<std::size_t>(C) * sizeof(float);
}

void layernorm_backward(const LayerNormBackwardArgs& a, cudaStream_t stream) {
  constexpr const char* where = "layernorm_backward (cuda)";
  const int64_t rows = a.rows;
  const int C = a.C;
  const DType st = a.dtype;
  const void *x = a.x, *dy = a.dy;
  void *dx_acc = a.dx_acc, *workspace = a.workspace;
  const float *gamma = a.gamma, *mean = a.mean, *rstd = a.rstd;
  float *dgamma = a.dgamma, *dbeta = a.dbeta;
  check_dtype(st, where);
  kat::ops::check_layernorm_shape(rows, C, where);
  KAT_CHECK(C <= kLnMaxC, where, ": C must be in [1, ", kLnMaxC, "], got ", C);
  if (rows == 0) return;
  KAT_CHECK(x && gamma && mean && rstd && dy && dx_acc && dgamma && dbeta, where, ": null pointer");
  KAT_CHECK(workspace != nullptr, where, ": workspace is null (size it with layernorm_backward_workspace_bytes)");
  KAT_CHECK(al(workspace, 4), where, ": workspace must be 4-byte aligned");
  const bool vec = C % vec_width(st) == 0 && al16(x) && al16(dy) && al16(dx_acc) && al16(gamma);
  float* partial = static_cast<float*>(workspace);
  int64_t blocks = 0;
  dispatch_dtype_vec(st, vec, [&](auto S, auto V) {
    constexpr DType s = decltype(S)::value;
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
        launch(ln_bwd_kernel<s, VEC, TPR>, dim3(static_cast<unsigned>(blocks)), BT, smem, stream, rows, C, x,
               gamma, mean, rstd, dy, dx_acc, partial);
      }
    });
  });
  const int ncol = 2 * C;
  launch(ln_bwd_stage2, dim3(static_cast<unsigned>((ncol + 31) / 32)), kS2Warps * 32, 0, stream,
         static_cast<const float*>(partial), static_cast<int>(blocks), C, dgamma, dbeta);
}

}  // namespace kat::cuda
