// Optimizer arithmetic on the CPU over flat fp32 arrays. Contract and the shared AdamW scalars:
// ops/optim.h; CUDA: ops/cuda/optim.h; the training layer's AdamW / EMA / clipping (train/optim.h)
// call these.
#pragma once
#include <cstdint>

#include "ops/optim.h"

namespace kat::ops {

// One AdamW step over n fp32 master weights (torch.optim.AdamW semantics). decay_mask: (n) uint8,
// 1 = weight decay applies; null = no decay anywhere.
void adamw_step(int64_t n, const AdamWScalars& s, float* params, const float* grads, float* m, float* v,
                const uint8_t* decay_mask);

// ema = float(decay) * ema + float(1 - decay) * params, n values.
void ema_update(int64_t n, float* ema, const float* params, double decay);

// Global L2 norm of n gradients (a sequential double sum: fixed order); if 0 < max_norm < norm the
// gradients are scaled by float(max_norm / (norm + 1e-6)). Returns the norm before clipping.
double clip_grad_norm(int64_t n, float* grads, double max_norm);

}  // namespace kat::ops
