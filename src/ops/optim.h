// Optimizer arithmetic over flat fp32 arrays, the op family's contract for both backends (CPU:
// ops/cpu/optim.h, CUDA: ops/cuda/optim.h; the training layer's classes in train/optim.h call
// them; test: the OpHarness cases "optim adamw+ema" and "optim clip_grad_norm",
// tests/gpu/op_cases/optim.cuh):
//   AdamW (torch.optim.AdamW):  p -= wd * p (decayed elements);  m = b1 m + (1-b1) g;
//                               v = b2 v + (1-b2) g^2;  p -= step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps)
//   EMA:                        ema = float(decay) * ema + float(1 - decay) * p
//   clipping (torch.nn.utils.clip_grad_norm_): norm = sqrt(Σ g^2) in double; if 0 < max_norm < norm,
//                               g *= float(max_norm / (norm + 1e-6)).
// Both backends use the same fp32 scalars (adamw_scalars) and the same operation order.
#pragma once
#include <cmath>
#include <cstdint>

#include "kat/core/error.h"

namespace kat::ops {

// The fp32 scalars of one AdamW step, for step number t >= 1 (after increment): bias corrections
// in double, then rounded to float.
struct AdamWScalars {
  float b1 = 0, b2 = 0;              // float(beta1), float(beta2)
  float one_m_b1 = 0, one_m_b2 = 0;  // 1.0f - b1, 1.0f - b2 (in float)
  float step_size = 0;               // float(lr / (1 - beta1^t))
  float inv_sqrt_bc2 = 0;            // float(1 / sqrt(1 - beta2^t))
  float eps = 0;                     // float(eps)
  float wd = 0;                      // float(lr * weight_decay)
};

// Shape check shared by both backends (every op of the family works on n flat values).
inline void check_optim_count(int64_t n, const char* where) {
  KAT_CHECK(n >= 0, where, ": n must be >= 0, got ", n);
}

inline AdamWScalars adamw_scalars(double lr, double beta1, double beta2, double eps, double weight_decay,
                                  int64_t t) {
  KAT_CHECK(t >= 1, "adamw_scalars: step number must be >= 1, got ", t);
  AdamWScalars s;
  const double bc1 = 1.0 - std::pow(beta1, double(t)), bc2 = 1.0 - std::pow(beta2, double(t));
  s.b1 = float(beta1);
  s.b2 = float(beta2);
  s.one_m_b1 = 1.0f - s.b1;
  s.one_m_b2 = 1.0f - s.b2;
  s.step_size = float(lr / bc1);
  s.inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
  s.eps = float(eps);
  s.wd = float(lr * weight_decay);
  return s;
}

}  // namespace kat::ops
