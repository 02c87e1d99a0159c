// Softmax cross-entropy with soft targets and label smoothing, the op family's contract for both
// backends (CPU: ops/cpu/cross_entropy.h, CUDA: ops/cuda/cross_entropy.h; test: the OpHarness
// cases "softmax_xent_*" in tests/gpu/test_op_harness.cu, CPU gradients in tests/test_ops.cpp):
//   t = (1 - ls) * target + ls / K;  row_loss_b = -Σ_k t_bk log softmax(z_b)_k;
//   loss = mean_b row_loss_b;  dlogits = (softmax(z) - t) / B  (overwritten).
//   logits, target, dlogits: (B, K).
#pragma once
#include <cstdint>

#include "kat/core/error.h"

namespace kat::ops {

// Shape and argument check shared by both backends.
inline void check_softmax_xent_args(int64_t B, int64_t K, double label_smoothing, const char* where) {
  KAT_CHECK(B >= 0, where, ": B must be >= 0, got ", B);
  KAT_CHECK(K >= 1, where, ": K must be >= 1, got ", K);
  KAT_CHECK(label_smoothing >= 0.0 && label_smoothing < 1.0, where, ": label_smoothing must be in [0, 1)");
}

}  // namespace kat::ops
