// Multi-head self-attention core, the op family's contract for both backends (CPU:
// ops/cpu/attention.h, CUDA: ops/cuda/attention.h; test: the OpHarness cases "attention_*" in
// tests/gpu/test_op_harness.cu, CPU gradients in tests/test_ops.cpp):
//   qkv: (B, N, 3D) rows [q | k | v], each split into H heads of hd = D/H consecutive channels.
//   S = q k^T / sqrt(hd) per (image, head),  P = softmax_rows(S),  out (B, N, D) = P v.
//   backward: dqkv (B, N, 3D) overwritten.
// What the forward saves for the backward differs: the CPU keeps P (B, H, N, N), the CUDA op the
// log-sum-exp of each row of S (B, H, N) and recomputes P.
#pragma once
#include <cstdint>

#include "kat/core/error.h"

namespace kat::ops {

// Shape check shared by both backends (the CUDA op adds its sequence-length and head-dim limits).
inline void check_attention_shape(int64_t B, int64_t N, int64_t D, int64_t H, const char* where) {
  KAT_CHECK(B >= 0, where, ": B must be >= 0, got ", B);
  KAT_CHECK(N >= 1, where, ": N = ", N, " tokens, must be >= 1");
  KAT_CHECK(H >= 1 && D >= 1 && D % H == 0, where, ": D = ", D, " not divisible by H = ", H);
}

}  // namespace kat::ops
