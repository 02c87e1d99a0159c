// Optimizer arithmetic on the CPU. Contract: ops/optim.h. The fp32 expressions are those of the
// CUDA kernels (ops/cuda/optim.cu), in the same order.
#include "ops/cpu/optim.h"

#include <cmath>

namespace kat::ops {

void adamw_step(int64_t n, const AdamWScalars& s, float* p, const float* g, float* m, float* v,
                const uint8_t* decay_mask) {
  check_optim_count(n, "adamw_step");
  const float b1 = s.b1, b2 = s.b2;
  const float step_size = s.step_size, inv_sqrt_bc2 = s.inv_sqrt_bc2;
  const float eps = s.eps, wd = s.wd;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float pi = p[i];
    if (decay_mask && decay_mask[i]) pi -= wd * pi;
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    pi -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
    p[i] = pi;
  }
}

void ema_update(int64_t n, float* ema, const float* params, double decay) {
  check_optim_count(n, "ema_update");
  const float d = float(decay), r = float(1.0 - decay);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) ema[i] = d * ema[i] + r * params[i];
}

double clip_grad_norm(int64_t n, float* grads, double max_norm) {
  check_optim_count(n, "clip_grad_norm");
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(grads[i]) * grads[i];  // sequential: fixed order
  const double norm = std::sqrt(s);
  if (max_norm > 0 && norm > max_norm) {
    const float f = float(max_norm / (norm + 1e-6));
    for (int64_t i = 0; i < n; ++i) grads[i] *= f;
  }
  return norm;
}

}  // namespace kat::ops
