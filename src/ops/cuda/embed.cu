// Patch-embedding glue kernels (see embed.h). Memory-bound elementwise kernels, grid-stride.
#include <cuda_bf16.h>

#include <algorithm>

#include "kat/core/error.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/embed.h"
#include "ops/cuda/launch.cuh"
#include "ops/cuda/vec_io.cuh"

namespace kat::cuda {

namespace {
using vecio::ld_f;
using vecio::st_f;

// Grid-stride kernels: 256 threads, at most 8192 blocks.
unsigned grid_for(int64_t n) { return detail::grid_for(n, 256, 8192); }

template <typename I, typename T>
__global__ void im2col_kernel(int64_t B, int64_t C, int64_t H, int64_t W, int64_t p, const I* img, T* cols) {
  const int64_t gw = W / p, gh = H / p, P = gh * gw, K = C * p * p;
  const int64_t total = B * P * K;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = idx % K, bp = idx / K;
    const int64_t b = bp / P, pi = bp % P;
    const int64_t py = pi / gw, px = pi % gw;
    const int64_t c = k / (p * p), r = k % (p * p), kh = r / p, kw = r % p;
    st_f(cols + idx, ld_f(img + ((b * C + c) * H + py * p + kh) * W + px * p + kw));
  }
}

template <typename T>
__global__ void tokens_fwd_kernel(int64_t B, int64_t N, int64_t D, const T* patches, const float* cls,
                                  const float* pos, T* x) {
  const int64_t total = B * N * D;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = idx % D, bt = idx / D, t = bt % N, b = bt / N;
    const float src = t == 0 ? cls[c] : ld_f(patches + (b * (N - 1) + t - 1) * D + c);
    st_f(x + idx, src + pos[t * D + c]);
  }
}

// One thread per (t, c): sum over b in order; also copies dx[b, t>0] to dpatches.
template <typename T>
__global__ void tokens_bwd_kernel(int64_t B, int64_t N, int64_t D, const T* dx, float* dcls, float* dpos,
                                  T* dpatches) {
  const int64_t total = N * D;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = idx % D, t = idx / D;
    float s = 0.f;
    for (int64_t b = 0; b < B; ++b) {
      const T* src = dx + (b * N + t) * D + c;
      s += ld_f(src);
      if (t > 0) dpatches[(b * (N - 1) + t - 1) * D + c] = *src;
    }
    dpos[idx] += s;
    if (t == 0) dcls[c] += s;
  }
}

__global__ void f2bf_kernel(int64_t n, const float* src, __nv_bfloat16* dst) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

}  // namespace

void im2col_patches(const Im2colArgs& a, cudaStream_t stream) {
  const int64_t B = a.B, C = a.C, H = a.H, W = a.W, p = a.patch;
  const void* img = a.img;
  const DType img_st = a.img_dtype, st = a.dtype;
  void* cols = a.cols;
  kat::ops::check_patch_shape(B, C, H, W, p, "im2col_patches (cuda)");
  KAT_CHECK(img_st == st || img_st == DType::F32, "im2col_patches: bf16 images need bf16 columns");
  const int64_t total = B * (H / p) * (W / p) * C * p * p;
  if (total == 0) return;
  const auto* imf = static_cast<const float*>(img);
  if (st == DType::F32)
    im2col_kernel<<<grid_for(total), 256, 0, stream>>>(B, C, H, W, p, imf, static_cast<float*>(cols));
  else if (img_st == DType::F32)
    im2col_kernel<<<grid_for(total), 256, 0, stream>>>(B, C, H, W, p, imf, static_cast<__nv_bfloat16*>(cols));
  else
    im2col_kernel<<<grid_for(total), 256, 0, stream>>>(B, C, H, W, p, static_cast<const __nv_bfloat16*>(img),
                                                       static_cast<__nv_bfloat16*>(cols));
  KAT_CUDA_CHECK_LAUNCH();
}

void tokens_forward(const TokensForwardArgs& a, cudaStream_t stream) {
  const int64_t B = a.B, N = a.N, D = a.D;
  const DType st = a.dtype;
  const void* patches = a.patches;
  const float *cls = a.cls, *pos = a.pos;
  void* x = a.x;
  kat::ops::check_tokens_shape(B, N, D, "tokens_forward (cuda)");
  const int64_t total = B * N * D;
  if (total == 0) return;
  if (st == DType::F32)
    tokens_fwd_kernel<float><<<grid_for(total), 256, 0, stream>>>(B, N, D, static_cast<const float*>(patches), cls,
                                                                  pos, static_cast<float*>(x));
  else
    tokens_fwd_kernel<__nv_bfloat16><<<grid_for(total), 256, 0, stream>>>(
        B, N, D, static_cast<const __nv_bfloat16*>(patches), cls, pos, static_cast<__nv_bfloat16*>(x));
  KAT_CUDA_CHECK_LAUNCH();
}

void tokens_backward(const TokensBackwardArgs& a, cudaStream_t stream) {
  const int64_t B = a.B, N = a.N, D = a.D;
  const DType st = a.dtype;
  const void* dx = a.dx;
  float *dcls = a.dcls, *dpos = a.dpos;
  void* dpatches = a.dpatches;
  kat::ops::check_tokens_shape(B, N, D, "tokens_backward (cuda)");
  const int64_t total = N * D;
  if (total == 0 || B == 0) return;
  if (st == DType::F32)
    tokens_bwd_kernel<float><<<grid_for(total), 256, 0, stream>>>(B, N, D, static_cast<const float*>(dx), dcls,
                                                                  dpos, static_cast<float*>(dpatches));
  else
    tokens_bwd_kernel<__nv_bfloat16><<<grid_for(total), 256, 0, stream>>>(
        B, N, D, static_cast<const __nv_bfloat16*>(dx), dcls, dpos, static_cast<__nv_bfloat16*>(dpatches));
  KAT_CUDA_CHECK_LAUNCH();
}

void convert_f32_to_bf16(int64_t n, const float* src, void* dst, cudaStream_t stream) {
  if (n == 0) return;
  f2bf_kernel<<<grid_for(n), 256, 0, stream>>>(n, src, static_cast<__nv_bfloat16*>(dst));
  KAT_CUDA_CHECK_LAUNCH();
}

}  // namespace kat::cuda
