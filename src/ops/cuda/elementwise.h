// Elementwise ops on CUDA: exact GELU, residual add with drop-path, per-sample scaling, in-place
// division. Contract and shared shape checks: ops/elementwise.h; CPU: ops/cpu/elementwise.h (GELU,
// scale_rows); conventions: ops/cuda/stream.h.
#pragma once
#include <cstdint>

#include "ops/cuda/stream.h"
#include "ops/elementwise.h"

namespace kat::cuda {

// ---- exact (erf) GELU, elementwise over n values -------------------------------------------------
// y may alias x.
void gelu_forward(int64_t n, DType dt, const void* x, void* y, cudaStream_t stream);
// dx = dy * (Phi(x) + x phi(x)), overwritten; dx may alias x or dy.
void gelu_backward(int64_t n, DType dt, const void* x, const void* dy, void* dx, cudaStream_t stream);

// ---- residual with drop-path, and its backward ----------------------------------------------------
// y[b] = x[b] + scale[b] * f[b]: B samples of per_sample elements each (per_sample = tokens * C).
// scale: (B) fp32 device (0 or 1/(1-p) per sample); null means 1 (no drop-path). y may alias x or f.
void residual_add(int64_t B, int64_t per_sample, DType dt, const void* x, const void* f, const float* scale,
                  void* y, cudaStream_t stream);
// y[b] = scale[b] * x[b] (the backward of the branch: df = scale * dy; dx = dy needs no op).
// In place allowed. Same as kat::ops::scale_rows.
void scale_rows(int64_t B, int64_t per_sample, DType dt, const float* scale, const void* x, void* y,
                cudaStream_t stream);

// x[i] = x[i] / divisor in place (fp32 math, one rounding for bf16): the dlogits of one
// micro-batch divided by the number of accumulation steps, as the CPU trainer divides dz.
void divide_inplace(int64_t n, DType dt, void* x, float divisor, cudaStream_t stream);

}  // namespace kat::cuda
