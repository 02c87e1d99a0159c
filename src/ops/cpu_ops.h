// CPU ops of the transformer (the reference backend and the CPU production path).
// Every op is a free function over raw row-major buffers, templated on the scalar type so the same
// code runs in float (production) and double (finite-difference gradient checks).
//
// Conventions:
//  - Shapes are given in the comment of each function; "rows" = batch * tokens.
//  - Input gradients (dx) are OVERWRITTEN unless the argument is named `dx_acc` (then +=).
//  - Parameter gradients (dW, db, dgamma, ...) are always ACCUMULATED (+=) so gradient
//    accumulation over micro-batches is free; the trainer zeroes them once per step.
//  - Reductions over rows use a fixed chunking independent of the thread count: bitwise
//    deterministic results for a given binary.
#pragma once
#include <cstdint>

namespace kat::ops {

// C(M,N) = alpha * op(A) op(B) + beta * C; op = transpose when the flag is set. Row-major.
template <typename T>
void gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// Linear: y (rows, out) = x (rows, in) · W^T (W: (out, in)) + b (out; may be null).
template <typename T>
void linear_forward(int64_t rows, int64_t in, int64_t out, const T* x, const T* W, const T* b, T* y);
// dx (rows, in) = dy W (overwritten, or accumulated when accumulate_dx); dx may be null.
// dW += dy^T x; db += Σ_rows dy (db may be null).
template <typename T>
void linear_backward(int64_t rows, int64_t in, int64_t out, const T* x, const T* W, const T* dy,
                     T* dx, T* dW, T* db, bool accumulate_dx = false);

// LayerNorm over the last dim C: y = (x - mean) * rstd * gamma + beta. mean, rstd: (rows), saved.
template <typename T>
void layernorm_forward(int64_t rows, int64_t C, T eps, const T* x, const T* gamma, const T* beta,
                       T* y, T* mean, T* rstd);
// dx_acc (rows, C) += dL/dx; dgamma, dbeta (C) +=.
template <typename T>
void layernorm_backward(int64_t rows, int64_t C, const T* x, const T* gamma, const T* mean,
                        const T* rstd, const T* dy, T* dx_acc, T* dgamma, T* dbeta);

// Multi-head self-attention core. qkv: (B, N, 3D) with rows [q | k | v], each split into H heads of
// hd = D/H consecutive channels. out: (B, N, D). probs: (B, H, N, N) softmax(q k^T / sqrt(hd)), saved.
template <typename T>
void attention_forward(int64_t B, int64_t N, int64_t D, int64_t H, const T* qkv, T* out, T* probs);
// dqkv (B, N, 3D) overwritten.
template <typename T>
void attention_backward(int64_t B, int64_t N, int64_t D, int64_t H, const T* qkv, const T* probs,
                        const T* dout, T* dqkv);

// Exact (erf) GELU, elementwise over n values.
template <typename T>
void gelu_forward(int64_t n, const T* x, T* y);
template <typename T>
void gelu_backward(int64_t n, const T* x, const T* dy, T* dx);

// Softmax cross-entropy with soft targets and label smoothing:
//   t = (1 - ls) * target + ls / K;  loss = mean_b  -Σ_k t_bk log softmax(z_b)_k
// logits, target, dlogits: (B, K). dlogits = (softmax(z) - t) / B (overwritten; may be null).
// Returns the loss; also writes per-row losses when row_loss is not null.
template <typename T>
double softmax_xent(int64_t B, int64_t K, const T* logits, const T* target, T label_smoothing,
                    T* dlogits, T* row_loss = nullptr);

// Patch extraction (conv with kernel = stride = p as a GEMM):
// img (B, C, H, W) -> cols (B, (H/p)*(W/p), C*p*p), column order (c, kh, kw) = Conv2d weight order.
template <typename T>
void im2col_patches(int64_t B, int64_t C, int64_t H, int64_t W, int64_t p, const T* img, T* cols);

// Drop-path (stochastic depth): y[b] = x[b] * scale[b] (scale = 0 or 1/(1-p)), rows_per_sample
// rows of width C each. In place allowed.
template <typename T>
void scale_rows(int64_t B, int64_t per_sample, const T* scale, const T* x, T* y);

}  // namespace kat::ops
