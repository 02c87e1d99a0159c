// Elementwise ops, the op family's contract for both backends (CPU: ops/cpu/elementwise.h, CUDA:
// ops/cuda/elementwise.h; test: the OpHarness cases "elementwise gelu / residual / divide",
// tests/gpu/op_cases/elementwise.cuh, CPU gradients in tests/test_ops.cpp):
//   GELU (exact, erf):  y = x Φ(x);  dx = dy (Φ(x) + x φ(x))           n values
//   drop-path scaling:  y[b] = scale[b] x[b]                          B samples of per_sample values
//   residual (CUDA):    y[b] = x[b] + scale[b] f[b]  (the CPU model adds scale_rows(f) to x)
//   division (CUDA):    x /= divisor  (the CPU trainer divides dz in place)
#pragma once
#include <cstdint>

#include "kat/core/error.h"

namespace kat::ops {

// Shape checks shared by both backends.
inline void check_elementwise_count(int64_t n, const char* where) {
  KAT_CHECK(n >= 0, where, ": n must be >= 0, got ", n);
}
inline void check_rows_shape(int64_t B, int64_t per_sample, const char* where) {
  KAT_CHECK(B >= 0 && per_sample >= 0, where, ": B and per_sample must be >= 0, got ", B, " and ", per_sample);
}

}  // namespace kat::ops
