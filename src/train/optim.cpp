#include "train/optim.h"

#include <algorithm>
#include <cmath>

namespace kat {

AdamW::AdamW(const ParamTable& table, const AdamWConfig& cfg) : cfg_(cfg) {
  m.assign(table.total(), 0.0f);
  v.assign(table.total(), 0.0f);
  decay_.assign(table.total(), 0);
  for (const auto& s : table.specs()) {
    const bool d = s.kind == ParamKind::Weight || (s.kind == ParamKind::Rational && cfg.decay_rational);
    std::fill_n(decay_.begin() + s.offset, s.numel, uint8_t(d));
  }
}

void AdamW::step(float* p, const float* g, double lr) {
  ++t_;
  const double bc1 = 1.0 - std::pow(cfg_.beta1, double(t_)), bc2 = 1.0 - std::pow(cfg_.beta2, double(t_));
  const float b1 = float(cfg_.beta1), b2 = float(cfg_.beta2);
  const float step_size = float(lr / bc1), inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
  const float eps = float(cfg_.eps), wd = float(lr * cfg_.weight_decay);
  const int64_t n = int64_t(m.size());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float pi = p[i];
    if (decay_[i]) pi -= wd * pi;
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    pi -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
    p[i] = pi;
  }
}

double cosine_lr(int64_t step, int64_t total, int64_t warmup, double base_lr, double warmup_lr, double min_lr) {
  if (step < warmup) return warmup_lr + (base_lr - warmup_lr) * double(step) / double(warmup);
  const double span = double(std::max<int64_t>(1, total - warmup));
  const double t = std::min(1.0, double(step - warmup) / span);
  return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + std::cos(M_PI * t));
}

void ema_update(std::vector<float>& ema, const std::vector<float>& params, double decay) {
  const float d = float(decay), r = float(1.0 - decay);
  const int64_t n = int64_t(ema.size());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) ema[i] = d * ema[i] + r * params[i];
}

double clip_grad_norm(std::vector<float>& grads, double max_norm) {
  double s = 0;
  for (float g : grads) s += double(g) * g;  // sequential: fixed order, deterministic
  const double norm = std::sqrt(s);
  if (max_norm > 0 && norm > max_norm) {
    const float f = float(max_norm / (norm + 1e-6));
    for (float& g : grads) g *= f;
  }
  return norm;
}

}  // namespace kat
