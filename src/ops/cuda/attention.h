// Multi-head self-attention core on CUDA for short sequences (N <= 256 tokens, head dim
// 16..64, a multiple of 4), flash-style: the N x N scores are never written to memory.
// Contract and shared shape check: ops/attention.h; CPU: ops/cpu/attention.h. Instead of P the
// forward saves lse (B, H, N) fp32, the log-sum-exp of each row of S (scale = 1/sqrt(hd)).
// Backward (dqkv overwritten):  Dv_i = dout_i . out_i;  P_ij = exp(S_ij - lse_i);
//   dv_j = sum_i P_ij dout_i;  dS_ij = P_ij (dout_i . v_j - Dv_i);
//   dq_i = scale sum_j dS_ij k_j;  dk_j = scale sum_i dS_ij q_i.
// qkv/out/dout/dqkv are of DType F32 or BF16; all math fp32, one rounding per bf16 output.
// Kernels: one block per (query or key tile of 64 rows, head, image); K,V (forward, dq) or
// Q,dout (dk, dv) of the (image, head) staged in shared memory as fp32; 4 threads per row, each
// owning every 4th channel; dot products combined with warp shuffles in a fixed order. Every sum
// runs in a fixed order: bitwise reproducible, no atomics.
// bf16 storage with hd in {16, 32, 48, 64} uses a tensor-core path instead (attention_mma.cu:
// FlashAttention-2 style, mma.sync bf16 -> fp32, online softmax, fragments in registers). P, P^T
// and dS are rounded to bf16 before their second GEMM (as FlashAttention does). Also
// deterministic. attention_force_simt(true) (tests) selects the CUDA-core kernels for bf16 as well.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ops/attention.h"
#include "ops/cuda/stream.h"

namespace kat::cuda {

// Throws kat::Error unless the shape passes the shared check (ops/attention.h) and 1 <= N <= 256,
// hd = D/H in [16, 64] and hd % 8 == 0 (the CUDA kernels' limits).
void attention_check_shape(int64_t N, int64_t D, int64_t H);

struct AttentionForwardArgs {
  int64_t B = 0, N = 0, D = 0, H = 0;
  DType dtype = DType::F32;   // of qkv and out
  const void* qkv = nullptr;  // (B, N, 3D)
  void* out = nullptr;        // (B, N, D)
  float* lse = nullptr;       // (B, H, N) fp32, saved for the backward
};
void attention_forward(const AttentionForwardArgs& a, cudaStream_t stream);

// Workspace: the Dv_i row terms (B*H*N fp32) and, for the tensor-core path, dS^T (B*H*N*pad16(N) bf16).
std::size_t attention_backward_workspace_bytes(int64_t B, int64_t N, int64_t H);

// dqkv must not alias qkv, out or dout.
struct AttentionBackwardArgs {
  int64_t B = 0, N = 0, D = 0, H = 0;
  DType dtype = DType::F32;    // of qkv, out, dout, dqkv
  const void* qkv = nullptr;   // (B, N, 3D), the forward's input
  const void* out = nullptr;   // (B, N, D), the forward's output (used for Dv_i)
  const float* lse = nullptr;  // (B, H, N), saved by the forward
  const void* dout = nullptr;  // (B, N, D)
  void* dqkv = nullptr;        // (B, N, 3D), overwritten
  void* workspace = nullptr;   // attention_backward_workspace_bytes(B, N, H)
};
void attention_backward(const AttentionBackwardArgs& a, cudaStream_t stream);

// Test switch: true = CUDA-core (SIMT) kernels for bf16 too.
void attention_force_simt(bool on);

}  // namespace kat::cuda
