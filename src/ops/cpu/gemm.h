// GEMM and the linear layer on the CPU (OpenBLAS sgemm/dgemm). Contract and shared shape check:
// ops/gemm.h; CUDA: ops/cuda/gemm.h.
// Conventions of every CPU op (ops/cpu/*.h): free functions over raw row-major buffers, templated on
// the scalar type so the same code runs in float (production) and double (finite-difference
// gradient checks); input gradients (dx) are OVERWRITTEN unless the argument is named `dx_acc`
// (then +=); parameter gradients (dW, db, dgamma, ...) are always ACCUMULATED (+=) so gradient
// accumulation over micro-batches is free; reductions over rows use a fixed chunking independent
// of the thread count: bitwise deterministic results for a given binary. "rows" = batch * tokens.
#pragma once
#include <cstdint>

#include "ops/gemm.h"

namespace kat::ops {

// C(M,N) = alpha * op(A) op(B) + beta * C; op = transpose when the flag is set. Row-major.
template <typename T>
void gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc);

// Linear: y (rows, out) = x (rows, in) · W^T (W: (out, in)) + b (out; may be null).
template <typename T>
void linear_forward(int64_t rows, int64_t in, int64_t out, const T* x, const T* W, const T* b, T* y);
// dx (rows, in) = dy W (overwritten, or accumulated when accumulate_dx); dx may be null.
// dW += dy^T x; db += Σ_rows dy (db may be null).
template <typename T>
void linear_backward(int64_t rows, int64_t in, int64_t out, const T* x, const T* W, const T* dy, T* dx, T* dW,
                     T* db, bool accumulate_dx = false);

}  // namespace kat::ops
