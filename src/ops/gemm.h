// The linear layer, the op family's contract for both backends (CPU: ops/cpu/gemm.h over OpenBLAS,
// CUDA: ops/cuda/gemm.h over cuBLASLt; test: the OpHarness cases "gemm", tests/gpu/op_cases/gemm.cuh,
// CPU gradients in tests/test_ops.cpp). Row-major, W in PyTorch's nn.Linear layout:
//   forward:          y (rows, out) = x (rows, in) W^T + b          W: (out, in), b: (out)
//   backward data:    dx (rows, in) = dy (rows, out) W              (overwritten)
//   backward weight:  dW (out, in) += dy^T x
//   bias grad:        db (out) += Σ_rows dy                          (fixed summation order)
// The CUDA Gemm names the same shape (M, K, N) = (rows, in, out).
#pragma once
#include <cstdint>

#include "kat/core/error.h"

namespace kat::ops {

// Shape check shared by both backends: rows >= 0 (0 is a no-op), in >= 1, out >= 1.
inline void check_linear_shape(int64_t rows, int64_t in, int64_t out, const char* where) {
  KAT_CHECK(rows >= 0 && in >= 1 && out >= 1, where, ": bad shape (rows, in, out) = (", rows, ", ", in, ", ", out,
            ")");
}
// The bias gradient's column sum over (rows, cols): both may be 0 (a no-op).
inline void check_column_sum_shape(int64_t rows, int64_t cols, const char* where) {
  KAT_CHECK(rows >= 0 && cols >= 0, where, ": bad shape (rows, cols) = (", rows, ", ", cols, ")");
}

}  // namespace kat::ops
