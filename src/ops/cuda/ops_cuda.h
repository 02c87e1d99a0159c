// CUDA versions of the transformer's small ops (LayerNorm, exact GELU, softmax cross-entropy,
// drop-path residual, AdamW, EMA), behind the same contracts as the CPU reference
// (ops/cpu_ops.h, train/optim.h). Cross-backend check: tests/gpu/test_ops_cuda.cu; notes and
// measurements: bench/OPS_CUDA.md.
//
// Conventions (as on the CPU, plus):
//  - Activation tensors (x, y, dy, dx, logits, ...) are device memory of `Storage` element type
//    (fp32 or bf16, see grkan_cuda.h); parameters (gamma, beta), saved statistics (mean, rstd),
//    targets, per-row losses, optimizer state and drop-path scales are always fp32.
//    All arithmetic is fp32; a bf16 result is the fp32 value rounded once (to nearest even).
//  - Input gradients are OVERWRITTEN unless the argument is named `dx_acc` (then +=); parameter
//    gradients (dgamma, dbeta) are ACCUMULATED (+=).
//  - Every reduction runs in a fixed order that depends only on the shape, on whether the
//    pointers allow 16-byte access, and on the device's multiprocessor count: results are
//    bitwise identical across runs. No float atomics anywhere.
//  - Everything is enqueued on `stream` (nothing synchronises). Kernels use programmatic
//    dependent launch and wait for the preceding kernel before touching memory, so stream order
//    holds as usual.
//  - 16-byte vector access is used when every pointer of the call is 16-byte aligned and the row
//    width is a multiple of the vector (8 bf16 / 4 fp32); otherwise a scalar path computes the
//    same thing.
//  - Bad arguments throw kat::Error; CUDA failures std::runtime_error (KAT_CUDA_CHECK).
//    Zero rows / zero elements is a no-op.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ops/cuda/grkan_cuda.h"  // Storage, storage_bytes, cudaStream_t

namespace kat::cuda {

// ---- LayerNorm over the last dim C (1 <= C <= 4096) --------------------------------------------
// y = (x - mean) * rstd * gamma + beta, mean/rstd (rows) fp32 saved (two-pass variance, biased, as
// the CPU op). y may alias x.
void layernorm_forward(int64_t rows, int C, float eps, Storage st, const void* x,
                       const float* gamma, const float* beta, void* y, float* mean, float* rstd,
                       cudaStream_t stream);

// Bytes of device workspace layernorm_backward needs (depends on the device's SM count; any
// storage or alignment). 4-byte alignment suffices; contents need not be initialised.
std::size_t layernorm_backward_workspace_bytes(int64_t rows, int C);

// dx_acc (rows, C, storage st) += dL/dx; dgamma, dbeta (C, fp32) += (deterministic two-stage
// reduction: per-block partial sums in `workspace`, then a fixed-order sum over blocks).
// dx_acc must not alias x or dy.
void layernorm_backward(int64_t rows, int C, Storage st, const void* x, const float* gamma,
                        const float* mean, const float* rstd, const void* dy, void* dx_acc,
                        float* dgamma, float* dbeta, void* workspace, cudaStream_t stream);

// ---- exact (erf) GELU, elementwise over n values -------------------------------------------------
// y may alias x.
void gelu_forward(int64_t n, Storage st, const void* x, void* y, cudaStream_t stream);
// dx = dy * (Phi(x) + x phi(x)), overwritten; dx may alias x or dy.
void gelu_backward(int64_t n, Storage st, const void* x, const void* dy, void* dx,
                   cudaStream_t stream);

// ---- softmax cross-entropy with soft targets and label smoothing ---------------------------------
//   t = (1 - ls) * target + ls / K;  row_loss_b = -sum_k t_bk log softmax(z_b)_k
//   dlogits = (softmax(z) - t) / B     (overwritten; may be null; may alias logits)
// logits, dlogits: (B, K) storage st; target: (B, K) fp32; row_loss: (B) fp32, required;
// loss: one fp32, the mean of the row losses (may be null), summed in a fixed order in double.
// Same function as kat::ops::softmax_xent (which returns the mean and does its math in double).
void softmax_xent(int64_t B, int K, Storage st, const void* logits, const float* target,
                  float label_smoothing, void* dlogits, float* row_loss, float* loss,
                  cudaStream_t stream);

// ---- residual with drop-path, and its backward ----------------------------------------------------
// y[b] = x[b] + scale[b] * f[b]: B samples of per_sample elements each (per_sample = tokens * C).
// scale: (B) fp32 device (0 or 1/(1-p) per sample); null means 1 (no drop-path). y may alias x or f.
void residual_add(int64_t B, int64_t per_sample, Storage st, const void* x, const void* f,
                  const float* scale, void* y, cudaStream_t stream);
// y[b] = scale[b] * x[b] (the backward of the branch: df = scale * dy; dx = dy needs no op).
// In place allowed. Same as kat::ops::scale_rows.
void scale_rows(int64_t B, int64_t per_sample, Storage st, const float* scale, const void* x,
                void* y, cudaStream_t stream);

// ---- optimizer ---------------------------------------------------------------------------------
// The fp32 scalars of one AdamW step, computed on the host exactly as kat::AdamW::step does
// (bias corrections in double, then rounded to float), for step number t >= 1 (after increment).
struct AdamWScalars {
  float b1 = 0, b2 = 0;            // float(beta1), float(beta2)
  float one_m_b1 = 0, one_m_b2 = 0;  // 1.0f - b1, 1.0f - b2 (in float, as the CPU)
  float step_size = 0;             // float(lr / (1 - beta1^t))
  float inv_sqrt_bc2 = 0;          // float(1 / sqrt(1 - beta2^t))
  float eps = 0;                   // float(eps)
  float wd = 0;                    // float(lr * weight_decay)
};
AdamWScalars adamw_scalars(double lr, double beta1, double beta2, double eps,
                           double weight_decay, int64_t t);

// One AdamW step over n fp32 master weights (torch.optim.AdamW semantics, same fp32 formula and
// operation order as kat::AdamW::step, no FMA contraction):
//   p -= wd * p (where decay_mask[i] != 0);  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//   p -= step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps)
// decay_mask: (n) uint8, null = no decay anywhere. params_bf16: optional (n) bf16 copy of the
// updated weights (null = none).
void adamw_step(int64_t n, const AdamWScalars& s, float* params, const float* grads, float* m,
                float* v, const uint8_t* decay_mask, void* params_bf16, cudaStream_t stream);

// torch.nn.utils.clip_grad_norm_ over n fp32 gradients, as kat::clip_grad_norm: norm = sqrt(sum
// g^2) (double), and if 0 < max_norm < norm, g *= float(max_norm / (norm + 1e-6)). Everything stays
// on the device (no synchronisation); the norm before clipping is left in the workspace
// (clip_grad_norm_result). Deterministic: a two-stage reduction whose order depends only on n.
// The sum order differs from the CPU's sequential sum: norms agree to ~1e-15 relative.
std::size_t clip_grad_norm_workspace_bytes();
void clip_grad_norm(int64_t n, float* grads, double max_norm, void* workspace, cudaStream_t stream);
const double* clip_grad_norm_result(const void* workspace);  // device pointer to the norm

// x[i] = x[i] / divisor in place (fp32 math, one rounding for bf16): the dlogits of one
// micro-batch divided by the number of accumulation steps, as the CPU trainer divides dz.
void divide_inplace(int64_t n, Storage st, void* x, float divisor, cudaStream_t stream);

// ema = float(decay) * ema + float(1 - decay) * params (as kat::ema_update).
void ema_update(int64_t n, float* ema, const float* params, double decay, cudaStream_t stream);

}  // namespace kat::cuda
