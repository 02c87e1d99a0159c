// Softmax cross-entropy with soft targets and label smoothing on CUDA. Contract in
// ops/cuda/cross_entropy.h; teams in row_ops.cuh.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kat/core/error.h"
#include "ops/cuda/cross_entropy.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/launch.cuh"
#include "ops/cuda/row_ops.cuh"

namespace kat::cuda {
using namespace detail;
using namespace rowops;
namespace {

// ---- softmax cross-entropy -----------------------------------------------------------------------
// Register-resident rows (team per row).
template <DType S, int VEC, int TPR>
__global__ void __launch_bounds__(block_threads<TPR>())
    xent_kernel(int64_t B, int K, const void* logits, const float* __restrict__ target, float ls, void* dlogits,
                float* __restrict__ row_loss) {
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
template <DType S>
__global__ void __launch_bounds__(kMaxTPR)
    xent_loop_kernel(int64_t B, int K, const void* logits, const float* __restrict__ target, float ls,
                     void* dlogits, float* __restrict__ row_loss) {
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

}  // namespace

// ==== softmax cross-entropy =========================================================================

void softmax_xent(const SoftmaxXentArgs& a, cudaStream_t stream) {
  constexpr const char* where = "softmax_xent (cuda)";
  const int64_t B = a.B;
  const int K = a.K;
  const DType st = a.dtype;
  const void* logits = a.logits;
  const float* target = a.target;
  const float label_smoothing = a.label_smoothing;
  void* dlogits = a.dlogits;
  float *row_loss = a.row_loss, *loss = a.loss;
  check_dtype(st, where);
  kat::ops::check_softmax_xent_args(B, K, label_smoothing, where);
  if (B == 0) return;
  KAT_CHECK(B < (int64_t(1) << 31), where, ": B too large");
  KAT_CHECK(logits && target && row_loss, where, ": null pointer");
  const bool vec = K % vec_width(st) == 0 && al16(logits) && al16(target) && (dlogits == nullptr || al16(dlogits));
  bool done = false;
  dispatch_dtype_vec(st, vec, [&](auto S, auto V) {
    constexpr DType s = decltype(S)::value;
    constexpr int VEC = decltype(V)::value;
    const int64_t nvec = K / VEC;
    if (nvec > static_cast<int64_t>(kMaxTPR) * kFwdVPT) return;  // too wide: loop kernel
    dispatch_tpr(choose_tpr(nvec, kFwdVPT), [&](auto T) {
      constexpr int TPR = decltype(T)::value;
      constexpr int BT = block_threads<TPR>();
      const int64_t teams = BT / TPR;
      launch(xent_kernel<s, VEC, TPR>, dim3(static_cast<unsigned>((B + teams - 1) / teams)), BT, 0, stream, B, K,
             logits, target, label_smoothing, dlogits, row_loss);
    });
    done = true;
  });
  if (!done) {
    if (st == DType::F32)
      launch(xent_loop_kernel<DType::F32>, dim3(static_cast<unsigned>(B)), kMaxTPR, 0, stream, B, K, logits,
             target, label_smoothing, dlogits, row_loss);
    else
      launch(xent_loop_kernel<DType::BF16>, dim3(static_cast<unsigned>(B)), kMaxTPR, 0, stream, B, K, logits,
             target, label_smoothing, dlogits, row_loss);
  }
  if (loss) launch(mean_kernel, dim3(1), kMaxTPR, 0, stream, B, static_cast<const float*>(row_loss), loss);
}

}  // namespace kat::cuda
