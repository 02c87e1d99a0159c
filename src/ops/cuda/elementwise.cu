// Elementwise ops on CUDA: exact GELU, residual with drop-path, per-sample scaling, in-place
// division. Contract in ops/cuda/elementwise.h.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kat/core/error.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/elementwise.h"
#include "ops/cuda/launch.cuh"
#include "ops/cuda/row_ops.cuh"

namespace kat::cuda {
using namespace detail;
using namespace rowops;
namespace {

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
template <DType S, int VEC, bool BWD>
__global__ void __launch_bounds__(kThreads) gelu_kernel(int64_t n, const void* x, const void* dy, void* out) {
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

// ---- residual with drop-path / scale_rows --------------------------------------------------------
// grid.y walks the samples, grid.x the vectors of a sample. RESID: y = x + s f; else y = s x.
template <DType S, int VEC, bool RESID>
__global__ void __launch_bounds__(kThreads)
    residual_kernel(int64_t B, int64_t per_sample, const void* x, const void* f, const float* __restrict__ scale,
                    void* y) {
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

// In-place division, grid-stride (the dlogits of one micro-batch by the accumulation steps).
template <typename T>
__global__ void __launch_bounds__(kThreads) divide_kernel(int64_t n, T* __restrict__ x, float divisor) {
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += int64_t(gridDim.x) * kThreads)
    vecio::st_f(x + i, vecio::ld_f(x + i) / divisor);
}

}  // namespace

// ==== GELU ==========================================================================================

namespace {
void gelu_launch(bool bwd, int64_t n, DType st, const void* x, const void* dy, void* out, cudaStream_t stream) {
  const char* where = bwd ? "gelu_backward (cuda)" : "gelu_forward (cuda)";
  check_dtype(st, where);
  kat::ops::check_elementwise_count(n, where);
  if (n == 0) return;
  KAT_CHECK(x && out && (!bwd || dy), where, ": null pointer");
  const bool vec = al16(x) && al16(out) && (!bwd || al16(dy));
  dispatch_dtype_vec(st, vec, [&](auto S, auto V) {
    constexpr DType s = decltype(S)::value;
    constexpr int VEC = decltype(V)::value;
    const int64_t nvec = n / VEC;
    const int64_t per_block = static_cast<int64_t>(kThreads) * kEwUnroll;
    const int64_t blocks = std::max<int64_t>(1, (nvec + per_block - 1) / per_block);
    KAT_CHECK(blocks < (int64_t(1) << 31), where, ": n too large");
    if (bwd)
      launch(gelu_kernel<s, VEC, true>, dim3(static_cast<unsigned>(blocks)), kThreads, 0, stream, n, x, dy, out);
    else
      launch(gelu_kernel<s, VEC, false>, dim3(static_cast<unsigned>(blocks)), kThreads, 0, stream, n, x,
             static_cast<const void*>(nullptr), out);
  });
}
}  // namespace

void gelu_forward(int64_t n, DType st, const void* x, void* y, cudaStream_t stream) {
  gelu_launch(false, n, st, x, nullptr, y, stream);
}
void gelu_backward(int64_t n, DType st, const void* x, const void* dy, void* dx, cudaStream_t stream) {
  gelu_launch(true, n, st, x, dy, dx, stream);
}

// ==== residual / scale_rows =========================================================================

namespace {
void residual_launch(bool resid, int64_t B, int64_t per_sample, DType st, const void* x, const void* f,
                     const float* scale, void* y, cudaStream_t stream) {
  const char* where = resid ? "residual_add (cuda)" : "scale_rows (cuda)";
  check_dtype(st, where);
  kat::ops::check_rows_shape(B, per_sample, where);
  if (B == 0 || per_sample == 0) return;
  KAT_CHECK(x && y && (!resid || f) && (resid || scale), where, ": null pointer");
  const bool vec = per_sample % vec_width(st) == 0 && al16(x) && al16(y) && (!resid || al16(f));
  dispatch_dtype_vec(st, vec, [&](auto S, auto V) {
    constexpr DType s = decltype(S)::value;
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

void residual_add(int64_t B, int64_t per_sample, DType st, const void* x, const void* f, const float* scale,
                  void* y, cudaStream_t stream) {
  residual_launch(true, B, per_sample, st, x, f, scale, y, stream);
}
void scale_rows(int64_t B, int64_t per_sample, DType st, const float* scale, const void* x, void* y,
                cudaStream_t stream) {
  residual_launch(false, B, per_sample, st, x, nullptr, scale, y, stream);
}

// ==== divide ========================================================================================

void divide_inplace(int64_t n, DType st, void* x, float divisor, cudaStream_t stream) {
  kat::ops::check_elementwise_count(n, "divide_inplace (cuda)");
  KAT_CHECK(divisor != 0.0f && std::isfinite(divisor),
            "divide_inplace (cuda): divisor must be finite and non-zero");
  if (n == 0) return;
  KAT_CHECK(x != nullptr, "divide_inplace (cuda): null pointer");
  if (st == DType::F32)
    divide_kernel<float><<<grid_for(n, kThreads, 4096), kThreads, 0, stream>>>(n, static_cast<float*>(x), divisor);
  else
    divide_kernel<__nv_bfloat16>
        <<<grid_for(n, kThreads, 4096), kThreads, 0, stream>>>(n, static_cast<__nv_bfloat16*>(x), divisor);
  KAT_CUDA_CHECK_LAUNCH();
}

}  // namespace kat::cuda
