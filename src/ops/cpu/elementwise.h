// Elementwise ops on the CPU: exact GELU and per-sample scaling (drop-path). Contract and shared
// shape checks: ops/elementwise.h; CUDA (plus the residual add and the in-place division the CUDA
// trainer uses): ops/cuda/elementwise.h.
#pragma once
#include <cstdint>

#include "ops/elementwise.h"

namespace kat::ops {

// Exact (erf) GELU, elementwise over n values.
template <typename T>
void gelu_forward(int64_t n, const T* x, T* y);
template <typename T>
void gelu_backward(int64_t n, const T* x, const T* dy, T* dx);

// Drop-path (stochastic depth): y[b] = x[b] * scale[b] (scale = 0 or 1/(1-p)), per_sample
// elements per sample. In place allowed.
template <typename T>
void scale_rows(int64_t B, int64_t per_sample, const T* scale, const T* x, T* y);

}  // namespace kat::ops
