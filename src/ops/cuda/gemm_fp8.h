// FP8 linear-layer GEMMs on Hopper through cuBLASLt (the recipe: ops/fp8.h; the casts that produce
// the operands: ops/cuda/fp8.h; the bf16 / fp32 GEMMs they replace: ops/cuda/gemm.h). Row-major,
// (M, K, N) = (rows, in, out) as ops/gemm.h, W in nn.Linear's (out, in) layout:
//   forward          y  (M, N) bf16  = (x_q s_x^-1)(W_q s_W^-1)^T + b      x_q (M, K), W_q (N, K): E4M3
//   backward data    dx (M, K) bf16  = (dy_q s_dy^-1)(W_q s_W^-1)          dy_q (M, N): E5M2,
//                                                                          W given as W_qT (K, N)
//   backward weight  dW (N, K) fp32 += (dy_q s_dy^-1)^T (x_q s_x^-1)       dy_qT (N, ld_t), x_qT (K, ld_t)
// Products are exact (8-bit codes times powers of two) and summed by the tensor cores; dW is
// accumulated into the existing fp32 gradient (beta = 1) in the GEMM's epilogue.
//
// Why the transposed operands: Hopper's FP8 tensor-core MMA (and so cuBLASLt on sm_90) takes both
// operands K-major, i.e. only the "TN" layout (A transposed, B not) in cuBLASLt's column-major
// terms; every operand must have the reduction dimension contiguous:
//   forward:         reduces over K: x_q (M, K) and W_q (N, K) already have K contiguous.
//   backward data:   reduces over N: dy_q (M, N) has; W needs W_qT (K, N) (the weight's cast writes
//                    both, once per optimizer step).
//   backward weight: reduces over M: needs x_qT (K, M) and dy_qT (N, M), written by the casts of x
//                    and dy (fp8_cast with q_t). Their row length ld_t is M rounded up to a
//                    multiple of 16 (fp8_padded_rows) with zero columns M..ld_t-1 (the cast writes
//                    them), so the GEMM reduces over ld_t and the padding adds exact zeros.
// The column-major mapping (cuBLASLt computes D (m x n) = op(A) op(B), column-major; a row-major
// (r, c) matrix is a column-major (c x r) one with the same leading dimension):
//   forward:  D = y^T (N x M, ld N);   A = W_q  stored (K x N, ld K), op T;   B = x_q  (K x M, ld K), op N;
//             m = N, n = M, k = K.
//   data:     D = dx^T (K x M, ld K);  A = W_qT stored (N x K, ld N), op T;   B = dy_q (N x M, ld N), op N;
//             m = K, n = M, k = N.
//   weight:   D = dW^T (K x N, ld K);  A = x_qT stored (ld_t x K, ld ld_t), op T;
//             B = dy_qT (ld_t x N, ld ld_t), op N;   m = K, n = N, k = ld_t.
// Type pairs (A x B): E4M3 x E4M3 (forward), E4M3 x E5M2 (both backward GEMMs); cuBLASLt supports
// these and E5M2 x E4M3, not E5M2 x E5M2. Outputs: bf16 (C = D = bf16) or fp32 (C = D = fp32,
// backward weight). Scales: cuBLASLt multiplies A and B by the values behind
// CUBLASLT_MATMUL_DESC_{A,B}_SCALE_POINTER (device fp32), so the INVERSE scales s^-1 are passed.
//
// Requirements (gemm_fp8_check): K and N multiples of 16 (they are leading dimensions of 8-bit
// operands and reduction lengths; cuBLASLt's FP8 kernels need 16-byte aligned leading dimensions),
// M any (it is never a leading dimension of an 8-bit operand: kat's rows = batch * 197 are odd);
// the operand and output pointers 16-byte aligned (b_bf16 need not be: without an epilogue for
// it the separate kernel adds b); compute capability 8.9 or newer (FP8 tensor cores).
// Bias: cuBLASLt's FP8 kernels with bf16 output take a bf16 bias in the epilogue (b_bf16: y =
// bf16(acc + bf16(b)), as the bf16 Gemm with b_storage); with only the fp32 b a separate kernel adds
// it (y = bf16(bf16(acc) + b), add_bias of ops/cuda/gemm.h).
// Fast accumulation (CUBLASLT_MATMUL_DESC_FAST_ACCUM): Hopper's FP8 MMA accumulates in a reduced
// precision inside the tensor core; without fast accumulation cuBLASLt promotes the partial sums
// into fp32 registers at intervals ("split accumulator"), with it it keeps them in the tensor core
// for the whole K (faster, less accurate). Default as Transformer Engine's recipe: on in the
// forward (K <= 4 D: short sums of bounded activations), off in both backward GEMMs (the gradient
// sums, over M = 50432 tokens in the weight gradient, are long and their small terms matter). Each
// call can override it (the field fast_accum).
//
// Plans (matmul descriptors, layouts, the heuristic's algorithm) are cached per (shape, types,
// alignments, epilogue, fast_accum), the handle and workspace created once; reductions restricted to
// deterministic schemes first (as Gemm). Everything is enqueued on `stream`, nothing synchronises;
// CUDA / cuBLAS failures throw std::runtime_error, bad arguments and unsupported shapes kat::Error.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "kat/core/fp8.h"
#include "ops/cuda/stream.h"

namespace kat::cuda {

// Empty if GemmFp8 can run (M, K, N) (K and N multiples of 16, M >= 0), else the reason.
std::string gemm_fp8_unsupported(int64_t M, int64_t K, int64_t N);
inline bool gemm_fp8_can_implement(int64_t M, int64_t K, int64_t N) {
  return gemm_fp8_unsupported(M, K, N).empty();
}
// Throws kat::Error (naming `where`) with the reason when (M, K, N) is unsupported.
void gemm_fp8_check(int64_t M, int64_t K, int64_t N, const char* where);

struct GemmFp8ForwardArgs {
  int64_t M = 0, K = 0, N = 0;
  const uint8_t* x_q = nullptr;        // (M, K) E4M3
  const uint8_t* W_q = nullptr;        // (N, K) E4M3
  const float* x_scale_inv = nullptr;  // (1) device: s_x^-1
  const float* W_scale_inv = nullptr;  // (1) device: s_W^-1
  const float* b = nullptr;            // (N) fp32, or null (no bias)
  const void* b_bf16 = nullptr;        // (N) bf16 copy of b for the epilogue, or null (needs b)
  void* y = nullptr;                   // (M, N) bf16, overwritten
  bool fast_accum = true;
};
struct GemmFp8BackwardDataArgs {
  int64_t M = 0, K = 0, N = 0;
  const uint8_t* dy_q = nullptr;        // (M, N) E5M2
  const uint8_t* W_qT = nullptr;        // (K, N) E4M3: the weight transposed
  const float* dy_scale_inv = nullptr;  // (1) device
  const float* W_scale_inv = nullptr;   // (1) device
  void* dx = nullptr;                   // (M, K) bf16, overwritten
  bool fast_accum = false;
};
struct GemmFp8BackwardWeightArgs {
  int64_t M = 0, K = 0, N = 0;
  int64_t ld_t = 0;                     // row length of dy_qT and x_qT; 0: fp8_padded_rows(M)
  const uint8_t* dy_qT = nullptr;       // (N, ld_t) E5M2, columns M..ld_t-1 zero
  const uint8_t* x_qT = nullptr;        // (K, ld_t) E4M3, columns M..ld_t-1 zero
  const float* dy_scale_inv = nullptr;  // (1) device
  const float* x_scale_inv = nullptr;   // (1) device
  float* dW = nullptr;                  // (N, K) fp32, accumulated (+=)
  bool fast_accum = false;
};

class GemmFp8 {
 public:
  // Throws kat::Error on a device without FP8 tensor cores (compute capability < 8.9).
  explicit GemmFp8(std::size_t workspace_bytes = std::size_t(32) << 20);
  ~GemmFp8();
  GemmFp8(const GemmFp8&) = delete;
  GemmFp8& operator=(const GemmFp8&) = delete;

  void forward(const GemmFp8ForwardArgs& a, cudaStream_t stream);
  void backward_data(const GemmFp8BackwardDataArgs& a, cudaStream_t stream);
  void backward_weight(const GemmFp8BackwardWeightArgs& a, cudaStream_t stream);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace kat::cuda
