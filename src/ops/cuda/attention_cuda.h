// Multi-head self-attention core on CUDA for short sequences (N <= 256 tokens, head dim
// 16..64, a multiple of 4), flash-style: the N x N scores are never written to memory.
// Same contract as kat::ops::attention_forward/backward (ops/cpu_ops.h):
//   qkv: (B, N, 3D) rows [q | k | v], each split into H heads of hd = D/H consecutive channels.
//   out: (B, N, D).  S = q k^T * scale (scale = 1/sqrt(hd)), P = softmax_rows(S), out = P v.
// Instead of P the forward saves lse (B, H, N) fp32, the log-sum-exp of each row of S.
// Backward (dqkv overwritten):  Dv_i = dout_i . out_i;  P_ij = exp(S_ij - lse_i);
//   dv_j = sum_i P_ij dout_i;  dS_ij = P_ij (dout_i . v_j - Dv_i);
//   dq_i = scale sum_j dS_ij k_j;  dk_j = scale sum_i dS_ij q_i.
// qkv/out/dout/dqkv are `Storage` (fp32 or bf16); all math fp32, one rounding per bf16 output.
// Kernels: one block per (query or key tile of 64 rows, head, image); K,V (forward, dq) or
// Q,dout (dk, dv) of the (image, head) staged in shared memory as fp32; 4 threads per row, each
// owning every 4th channel; dot products combined with warp shuffles in a fixed order. Every sum
// runs in a fixed order: bitwise reproducible, no atomics.
// bf16 storage with hd in {16, 32, 48, 64} uses a tensor-core path instead (attention_mma.cu:
// FlashAttention-2 style, mma.sync bf16 -> fp32, online softmax, fragments in registers). P, P^T
// and dS are rounded to bf16 before their second GEMM (as FlashAttention does). Also
// deterministic. KAT_ATTN_SIMT=1 in the environment (or attention_force_simt(true)) selects the
// CUDA-core kernels for bf16 as well.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ops/cuda/grkan_cuda.h"  // Storage, cudaStream_t

namespace kat::cuda {

// Throws kat::Error unless 1 <= N <= 256, D % H == 0, hd = D/H in [16, 64] and hd % 4 == 0.
void attention_check_shape(int64_t N, int64_t D, int64_t H);

void attention_forward(int64_t B, int64_t N, int64_t D, int64_t H, Storage st, const void* qkv,
                       void* out, float* lse, cudaStream_t stream);

// Workspace: the Dv_i row terms (B*H*N fp32) and, for the tensor-core path, dS^T (B*H*N*pad16(N) bf16).
std::size_t attention_backward_workspace_bytes(int64_t B, int64_t N, int64_t H);

// out: the forward's output (used for Dv_i). dqkv must not alias qkv, out or dout.
void attention_backward(int64_t B, int64_t N, int64_t D, int64_t H, Storage st, const void* qkv,
                        const void* out, const float* lse, const void* dout, void* dqkv,
                        void* workspace, cudaStream_t stream);

// Test/benchmark switch: true = CUDA-core (SIMT) kernels for bf16 too.
void attention_force_simt(bool on);

}  // namespace kat::cuda
