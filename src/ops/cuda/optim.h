// Optimizer arithmetic on CUDA over flat fp32 arrays: AdamW step, EMA update, global-norm
// clipping. Contract and the shared AdamW scalars: ops/optim.h; CPU: ops/cpu/optim.h;
// conventions: ops/cuda/stream.h.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ops/cuda/stream.h"
#include "ops/optim.h"

namespace kat::cuda {

using kat::ops::adamw_scalars;
using kat::ops::AdamWScalars;

// One AdamW step over n fp32 master weights (same fp32 formula and operation order as
// kat::ops::adamw_step, no FMA contraction).
struct AdamWStepArgs {
  int64_t n = 0;
  AdamWScalars scalars;                 // adamw_scalars(lr, betas, eps, weight decay, step)
  float* params = nullptr;              // (n) fp32 master weights, updated
  const float* grads = nullptr;         // (n)
  float* m = nullptr;                   // (n) first moments, updated
  float* v = nullptr;                   // (n) second moments, updated
  const uint8_t* decay_mask = nullptr;  // (n) uint8, 1 = weight decay applies; null = no decay anywhere
  void* params_bf16 = nullptr;          // (n) bf16 copy of the updated weights; optional
};
void adamw_step(const AdamWStepArgs& a, cudaStream_t stream);

// ema = float(decay) * ema + float(1 - decay) * params (as kat::ops::ema_update).
void ema_update(int64_t n, float* ema, const float* params, double decay, cudaStream_t stream);

// Clipping as kat::ops::clip_grad_norm, everything on the device (no synchronisation); the norm
// before clipping is left in the workspace (clip_grad_norm_result). Deterministic: a two-stage
// reduction whose order depends only on n. The sum order differs from the CPU's sequential sum:
// norms agree to ~1e-15 relative.
std::size_t clip_grad_norm_workspace_bytes();
void clip_grad_norm(int64_t n, float* grads, double max_norm, void* workspace, cudaStream_t stream);
const double* clip_grad_norm_result(const void* workspace);  // device pointer to the norm

}  // namespace kat::cuda
