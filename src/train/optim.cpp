#include "kat/train/optim.h"

#include <algorithm>
#include <cmath>

#include "ops/cpu/optim.h"

namespace kat {

AdamW::AdamW(const ParamTable& table, const AdamWConfig& cfg) : cfg_(cfg) {
  m.assign(table.total(), 0.0f);
  v.assign(table.total(), 0.0f);
  decay_.assign(table.total(), 0);
  for (const auto& s : table.specs())  // the one weight-decay rule: ParamSpec::decay (model/params.h)
    std::fill_n(decay_.begin() + s.offset, s.numel, uint8_t(s.decay(cfg.decay_rational)));
}

void AdamW::step(float* p, const float* g, double lr) {
  ++t_;
  ops::adamw_step(int64_t(m.size()),
                  ops::adamw_scalars(lr, cfg_.beta1, cfg_.beta2, cfg_.eps, cfg_.weight_decay, t_), p, g, m.data(),
                  v.data(), decay_.data());
}

double cosine_lr(int64_t step, int64_t total, int64_t warmup, double base_lr, double warmup_lr, double min_lr) {
  if (step < warmup) return warmup_lr + (base_lr - warmup_lr) * double(step) / double(warmup);
  const double span = double(std::max<int64_t>(1, total - warmup));
  const double t = std::min(1.0, double(step - warmup) / span);
  return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + std::cos(M_PI * t));
}

void ema_update(std::vector<float>& ema, const std::vector<float>& params, double decay) {
  ops::ema_update(int64_t(ema.size()), ema.data(), params.data(), decay);
}

double clip_grad_norm(std::vector<float>& grads, double max_norm) {
  return ops::clip_grad_norm(int64_t(grads.size()), grads.data(), max_norm);
}

}  // namespace kat
