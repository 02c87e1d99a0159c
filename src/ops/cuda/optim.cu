// Optimizer kernels on CUDA over flat fp32 arrays: AdamW step, EMA update, global-norm gradient
// clipping. Contract in ops/cuda/optim.h (scalars: ops/optim.h); the CPU versions in
// ops/cpu/optim.cpp do the same fp32 arithmetic in the same order.
// The clipping norm is a deterministic two-stage reduction: a grid whose size depends only on n
// writes one double partial sum of squares per block (grid-stride loop, then a fixed shared-memory
// tree), one block sums the partials in a fixed order and writes the norm and the clip factor to
// the device, and the scale kernel reads the factor there: no host round trip, no atomics.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kat/core/error.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/launch.cuh"
#include "ops/cuda/optim.h"
#include "ops/cuda/vec_io.cuh"

namespace kat::cuda {
using namespace detail;
namespace {
using namespace vecio;

constexpr int kThreads = 256;
constexpr int kMaxPartials = 1024;

// Fixed-order tree over the block (blockDim.x == kThreads).
__device__ double block_sum(double v, double* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  return sh[0];
}

__global__ void __launch_bounds__(kThreads)
    sumsq_partials_kernel(int64_t n, const float* __restrict__ g, double* __restrict__ partials) {
  __shared__ double sh[kThreads];
  double s = 0;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += int64_t(gridDim.x) * kThreads) {
    const double v = g[i];
    s += v * v;
  }
  const double t = block_sum(s, sh);
  if (threadIdx.x == 0) partials[blockIdx.x] = t;
}

// factor = max_norm / (norm + 1e-6) when 0 < max_norm < norm, else 1 (torch.nn.utils.clip_grad_norm_).
__global__ void __launch_bounds__(kThreads)
    clip_factor_kernel(int nparts, const double* __restrict__ partials, double max_norm, double* __restrict__ norm,
                       float* __restrict__ factor) {
  __shared__ double sh[kThreads];
  double s = 0;
  for (int i = threadIdx.x; i < nparts; i += kThreads) s += partials[i];
  const double t = block_sum(s, sh);
  if (threadIdx.x == 0) {
    const double nn = sqrt(t);
    *norm = nn;
    *factor = (max_norm > 0 && nn > max_norm) ? float(max_norm / (nn + 1e-6)) : 1.0f;
  }
}

__global__ void __launch_bounds__(kThreads)
    scale_by_factor_kernel(int64_t n, float* __restrict__ g, const float* __restrict__ factor) {
  const float f = *factor;
  if (f == 1.0f) return;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += int64_t(gridDim.x) * kThreads)
    g[i] *= f;
}

// ---- AdamW / EMA ---------------------------------------------------------------------------------
// Explicitly rounded operations (no FMA contraction), in kat::AdamW::step's order.
__device__ __forceinline__ float adamw_elem(const AdamWScalars& s, float p, float g, float& m, float& v,
                                            bool decay) {
  if (decay) p = __fsub_rn(p, __fmul_rn(s.wd, p));
  m = __fadd_rn(__fmul_rn(s.b1, m), __fmul_rn(s.one_m_b1, g));
  v = __fadd_rn(__fmul_rn(s.b2, v), __fmul_rn(__fmul_rn(s.one_m_b2, g), g));
  const float den = __fadd_rn(__fmul_rn(__fsqrt_rn(v), s.inv_sqrt_bc2), s.eps);
  return __fsub_rn(p, __fdiv_rn(__fmul_rn(s.step_size, m), den));
}

template <int VEC>
__global__ void __launch_bounds__(kThreads)
    adamw_kernel(int64_t n, AdamWScalars s, float* p, const float* __restrict__ g, float* m, float* v,
                 const uint8_t* __restrict__ mask, unsigned short* pbf) {
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
      if (pbf) reinterpret_cast<uint2*>(pbf)[i] = make_uint2(pack_bf16x2(pv.x, pv.y), pack_bf16x2(pv.z, pv.w));
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

}  // namespace

std::size_t clip_grad_norm_workspace_bytes() {
  return kMaxPartials * sizeof(double) + sizeof(double) + sizeof(float);
}

void clip_grad_norm(int64_t n, float* grads, double max_norm, void* workspace, cudaStream_t stream) {
  kat::ops::check_optim_count(n, "clip_grad_norm (cuda)");
  KAT_CHECK(workspace != nullptr && (n == 0 || grads != nullptr), "clip_grad_norm (cuda): null pointer");
  auto* partials = static_cast<double*>(workspace);
  double* norm = partials + kMaxPartials;
  float* factor = reinterpret_cast<float*>(norm + 1);
  const unsigned parts = grid_for(n, kThreads, kMaxPartials);  // depends on n only: a fixed summation order
  sumsq_partials_kernel<<<parts, kThreads, 0, stream>>>(n, grads, partials);
  KAT_CUDA_CHECK_LAUNCH();
  clip_factor_kernel<<<1, kThreads, 0, stream>>>(int(parts), partials, max_norm, norm, factor);
  KAT_CUDA_CHECK_LAUNCH();
  if (n == 0 || max_norm <= 0) return;
  scale_by_factor_kernel<<<grid_for(n, kThreads, 4096), kThreads, 0, stream>>>(n, grads, factor);
  KAT_CUDA_CHECK_LAUNCH();
}

const double* clip_grad_norm_result(const void* workspace) {
  return static_cast<const double*>(workspace) + kMaxPartials;
}

// ==== AdamW / EMA ==================================================================================

void adamw_step(const AdamWStepArgs& a, cudaStream_t stream) {
  constexpr const char* where = "adamw_step (cuda)";
  const int64_t n = a.n;
  const AdamWScalars& s = a.scalars;
  float* params = a.params;
  const float* grads = a.grads;
  float* m = a.m;
  float* v = a.v;
  const uint8_t* decay_mask = a.decay_mask;
  void* params_bf16 = a.params_bf16;
  kat::ops::check_optim_count(n, where);
  if (n == 0) return;
  KAT_CHECK(params && grads && m && v, where, ": null pointer");
  const bool vec = al16(params) && al16(grads) && al16(m) && al16(v) && al(decay_mask, 4) && al(params_bf16, 8);
  auto* pbf = static_cast<unsigned short*>(params_bf16);
  if (vec) {
    const int64_t blocks = std::max<int64_t>(1, (n / 4 + kThreads - 1) / kThreads);
    launch(adamw_kernel<4>, dim3(static_cast<unsigned>(blocks)), kThreads, 0, stream, n, s, params, grads, m, v,
           decay_mask, pbf);
  } else {
    const int64_t blocks = (n + kThreads - 1) / kThreads;
    launch(adamw_kernel<1>, dim3(static_cast<unsigned>(blocks)), kThreads, 0, stream, n, s, params, grads, m, v,
           decay_mask, pbf);
  }
}

void ema_update(int64_t n, float* ema, const float* params, double decay, cudaStream_t stream) {
  constexpr const char* where = "ema_update (cuda)";
  kat::ops::check_optim_count(n, where);
  if (n == 0) return;
  KAT_CHECK(ema && params, where, ": null pointer");
  const float d = float(decay), r = float(1.0 - decay);
  if (al16(ema) && al16(params)) {
    const int64_t blocks = std::max<int64_t>(1, (n / 4 + kThreads - 1) / kThreads);
    launch(ema_kernel<4>, dim3(static_cast<unsigned>(blocks)), kThreads, 0, stream, n, d, r, ema, params);
  } else {
    launch(ema_kernel<1>, dim3(static_cast<unsigned>((n + kThreads - 1) / kThreads)), kThreads, 0, stream, n, d, r,
           ema, params);
  }
}

}  // namespace kat::cuda
