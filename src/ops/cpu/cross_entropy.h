// Softmax cross-entropy on the CPU. Contract and shape check: ops/cross_entropy.h; CUDA:
// ops/cuda/cross_entropy.h.
#pragma once
#include <cstdint>

#include "ops/cross_entropy.h"

namespace kat::ops {

// Softmax cross-entropy with soft targets and label smoothing:
//   t = (1 - ls) * target + ls / K;  loss = mean_b  -Σ_k t_bk log softmax(z_b)_k
// logits, target, dlogits: (B, K). dlogits = (softmax(z) - t) / B (overwritten; may be null).
// Returns the loss; also writes per-row losses when row_loss is not null.
template <typename T>
double softmax_xent(int64_t B, int64_t K, const T* logits, const T* target, T label_smoothing, T* dlogits,
                    T* row_loss = nullptr);

}  // namespace kat::ops
