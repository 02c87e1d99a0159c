// Linear-layer GEMMs on CUDA through cuBLASLt (row-major; contract and shared shape check:
// ops/gemm.h; CPU: kat::ops::linear_* in ops/cpu/gemm.h):
//   forward:          y (M, N)  = x (M, K) W^T + b      W: (N, K) (PyTorch nn.Linear layout)
//   backward data:    dx (M, K) = dy (M, N) W           (overwritten)
//   backward weight:  dW (N, K) += dy^T x               (fp32 accumulation into fp32 grads)
//   bias grad:        db (N) += colsum(dy)              (deterministic two-stage kernel, no atomics)
// x, W, y, dx, dy are of DType F32 or BF16 (ops/cuda/stream.h); b, dW, db are always fp32.
//  - DType::F32: fp32 inputs, CUBLAS_COMPUTE_32F (TF32 is never used: exact fp32 products).
//  - DType::BF16: bf16 inputs, fp32 accumulation (CUBLAS_COMPUTE_32F), bf16 output; the bias
//    is added in the epilogue from its bf16 copy when one is passed (y = bf16(x W^T + bf16(b)),
//    what PyTorch's autocast does), else by a separate kernel (y = bf16(bf16(x W^T) + b)):
//    cuBLASLt's fp32-bias epilogue with bf16 output picked a 3.6x slower kernel on the H200.
//  - DType::F32: the bias is added in the epilogue (CUBLASLT_EPILOGUE_BIAS) when the heuristic
//    offers it, else by the separate kernel.
// The handle and the workspace are created once (constructor); matmul descriptors, layouts and the
// heuristic's algorithm are cached per (shape, types, alignment) so a steady-state call only
// launches. Pointer alignments are passed to the heuristic, so any element-aligned pointer works.
// cuBLASLt picks one algorithm per cached plan and uses no split-K reduction with atomics for a
// given plan: results are run-to-run reproducible on one device for a fixed plan.
// Everything is enqueued on `stream`; nothing synchronises. CUDA/cuBLAS failures throw
// std::runtime_error; bad arguments kat::Error.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "ops/cuda/column_sum.h"  // the bias gradient (db += colsum(dy)) lives there
#include "ops/cuda/stream.h"
#include "ops/gemm.h"

namespace kat::cuda {

class Gemm {
 public:
  explicit Gemm(std::size_t workspace_bytes = std::size_t(32) << 20);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // y = x W^T + b (b fp32, may be null). y must not alias x or W. b_storage: optional copy of b
  // in storage st (bf16 mode: used by the epilogue instead of the separate bias kernel).
  void forward(int64_t M, int64_t K, int64_t N, DType st, const void* x, const void* W, const float* b, void* y,
               cudaStream_t stream, const void* b_storage = nullptr);
  // dx = dy W (overwritten).
  void backward_data(int64_t M, int64_t K, int64_t N, DType st, const void* dy, const void* W, void* dx,
                     cudaStream_t stream);
  // dW (fp32) += dy^T x.
  void backward_weight(int64_t M, int64_t K, int64_t N, DType st, const void* dy, const void* x, float* dW,
                       cudaStream_t stream);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// y (M, N, storage st) += b (N, fp32), in place (the fallback when the epilogue is unavailable).
void add_bias(int64_t M, int64_t N, DType st, void* y, const float* b, cudaStream_t stream);

}  // namespace kat::cuda
