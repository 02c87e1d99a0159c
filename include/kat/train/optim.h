// Optimizer pieces over flat parameter buffers (same layout as the model's ParamTable):
// AdamW with decoupled weight decay (PyTorch semantics), the cosine schedule with linear warm-up,
// an EMA of the weights, and global-norm gradient clipping.
#pragma once
#include <cstdint>
#include <vector>

#include "kat/model/params.h"

namespace kat {

struct AdamWConfig {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.05;
  bool decay_rational = true;  // timm decays the rational coefficients (docs/MODEL.md §4); switchable
};

class AdamW {
 public:
  AdamW(const ParamTable& table, const AdamWConfig& cfg);
  // One step at learning rate lr: p <- p - lr*wd*p (decayed groups only), then the Adam update
  // with bias correction (torch.optim.AdamW).
  void step(float* params, const float* grads, double lr);
  int64_t steps() const { return t_; }
  std::vector<float> m, v;  // first and second moments (num_params)
  void set_steps(int64_t t) { t_ = t; }
  const std::vector<uint8_t>& decay_mask() const { return decay_; }

 private:
  AdamWConfig cfg_;
  std::vector<uint8_t> decay_;  // per element: 1 = weight decay applies
  int64_t t_ = 0;
};

// lr at optimizer step `step` (0-based) of `total`: linear warm-up from warmup_lr to base_lr over
// warmup steps, then cosine from base_lr to min_lr.
double cosine_lr(int64_t step, int64_t total, int64_t warmup, double base_lr, double warmup_lr, double min_lr);

// ema <- decay * ema + (1 - decay) * params
void ema_update(std::vector<float>& ema, const std::vector<float>& params, double decay);

// Scales grads so that their global L2 norm is at most max_norm; returns the norm before clipping.
double clip_grad_norm(std::vector<float>& grads, double max_norm);

}  // namespace kat
