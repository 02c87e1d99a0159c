// Global-norm gradient clipping and the dlogits division of gradient accumulation (ops_cuda.h).
// The norm is a deterministic two-stage reduction: a grid whose size depends only on n writes one
// double partial sum of squares per block (grid-stride loop, then a fixed shared-memory tree), one
// block sums the partials in a fixed order and writes the norm and the clip factor to the device,
// and the scale kernel reads the factor there: no host round trip, no atomics.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/ops_cuda.h"
#include "ops/cuda/vec_io.cuh"

namespace kat::cuda {

namespace {

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
    clip_factor_kernel(int nparts, const double* __restrict__ partials, double max_norm,
                       double* __restrict__ norm, float* __restrict__ factor) {
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

template <typename T>
__global__ void __launch_bounds__(kThreads) divide_kernel(int64_t n, T* __restrict__ x, float divisor) {
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += int64_t(gridDim.x) * kThreads)
    vecio::st_f(x + i, vecio::ld_f(x + i) / divisor);
}

unsigned grid_for(int64_t n, int64_t cap) {
  return unsigned(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, cap));
}

}  // namespace

std::size_t clip_grad_norm_workspace_bytes() {
  return kMaxPartials * sizeof(double) + sizeof(double) + sizeof(float);
}

void clip_grad_norm(int64_t n, float* grads, double max_norm, void* workspace, cudaStream_t stream) {
  KAT_CHECK(n >= 0, "clip_grad_norm (cuda): n must be >= 0, got ", n);
  KAT_CHECK(workspace != nullptr && (n == 0 || grads != nullptr), "clip_grad_norm (cuda): null pointer");
  auto* partials = static_cast<double*>(workspace);
  double* norm = partials + kMaxPartials;
  float* factor = reinterpret_cast<float*>(norm + 1);
  const unsigned parts = grid_for(n, kMaxPartials);  // depends on n only: a fixed summation order
  sumsq_partials_kernel<<<parts, kThreads, 0, stream>>>(n, grads, partials);
  KAT_CUDA_CHECK_LAUNCH();
  clip_factor_kernel<<<1, kThreads, 0, stream>>>(int(parts), partials, max_norm, norm, factor);
  KAT_CUDA_CHECK_LAUNCH();
  if (n == 0 || max_norm <= 0) return;
  scale_by_factor_kernel<<<grid_for(n, 4096), kThreads, 0, stream>>>(n, grads, factor);
  KAT_CUDA_CHECK_LAUNCH();
}

const double* clip_grad_norm_result(const void* workspace) {
  return static_cast<const double*>(workspace) + kMaxPartials;
}

void divide_inplace(int64_t n, Storage st, void* x, float divisor, cudaStream_t stream) {
  KAT_CHECK(n >= 0, "divide_inplace (cuda): n must be >= 0, got ", n);
  KAT_CHECK(divisor != 0.0f && std::isfinite(divisor),
            "divide_inplace (cuda): divisor must be finite and non-zero");
  if (n == 0) return;
  KAT_CHECK(x != nullptr, "divide_inplace (cuda): null pointer");
  if (st == Storage::F32)
    divide_kernel<float><<<grid_for(n, 4096), kThreads, 0, stream>>>(n, static_cast<float*>(x), divisor);
  else
    divide_kernel<__nv_bfloat16>
        <<<grid_for(n, 4096), kThreads, 0, stream>>>(n, static_cast<__nv_bfloat16*>(x), divisor);
  KAT_CUDA_CHECK_LAUNCH();
}

}  // namespace kat::cuda
