// DeviceOptimizer (see device_optimizer.h). Compiled into katlib only with the CUDA backend.
#ifdef KAT_HAVE_CUDA
#include "train/device_optimizer.h"

#include <cuda_runtime.h>

#include <vector>

#include "kat/core/error.h"
#include "ops/cuda/optim.h"

namespace kat {

DeviceOptimizer::DeviceOptimizer(KatModelCuda& model, const AdamWConfig& cfg) : model_(model), cfg_(cfg) {
  const size_t n = size_t(model.device_total());
  m_.allocate(n);
  v_.allocate(n);
  decay_.allocate(n);
  m_.zero();
  v_.zero();
  const std::vector<uint8_t> mask = model.layout().decay_mask(cfg.decay_rational);
  KAT_CUDA_CHECK(cudaMemcpy(decay_.data(), mask.data(), mask.size(), cudaMemcpyHostToDevice));
  clip_ws_.allocate(cuda::clip_grad_norm_workspace_bytes());
  clip_ws_.zero();
}

void DeviceOptimizer::step(double lr) {
  KAT_CHECK(!ema_swapped_, "DeviceOptimizer::step: the EMA weights are swapped in (call swap_ema first)");
  ++t_;
  const auto sc = cuda::adamw_scalars(lr, cfg_.beta1, cfg_.beta2, cfg_.eps, cfg_.weight_decay, t_);
  cuda::adamw_step({.n = model_.device_total(),
                    .scalars = sc,
                    .params = model_.device_params(),
                    .grads = model_.device_grads(),
                    .m = m_.data(),
                    .v = v_.data(),
                    .decay_mask = decay_.data(),
                    .params_bf16 = model_.working_weights()},
                   model_.stream());
  model_.refresh_fp8_weights();  // FP8: the new weights' codes (no-op without FP8)
}

void DeviceOptimizer::download_moments(float* m_host, float* v_host) const {
  model_.download_padded(m_.data(), m_host);
  model_.download_padded(v_.data(), v_host);
}

void DeviceOptimizer::upload_moments(const float* m_host, const float* v_host, int64_t steps) {
  model_.upload_padded(m_host, m_.data());
  model_.upload_padded(v_host, v_.data());
  t_ = steps;
}

void DeviceOptimizer::clip_grad_norm(double max_norm) {
  cuda::clip_grad_norm(model_.device_total(), model_.device_grads(), max_norm, clip_ws_.data(), model_.stream());
}

double DeviceOptimizer::last_grad_norm() const {
  double v = 0;
  KAT_CUDA_CHECK(cudaMemcpyAsync(&v, cuda::clip_grad_norm_result(clip_ws_.data()), sizeof v,
                                 cudaMemcpyDeviceToHost, model_.stream()));
  KAT_CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
  return v;
}

void DeviceOptimizer::ema_init(const float* host) {
  KAT_CHECK(!ema_swapped_, "DeviceOptimizer::ema_init: the EMA weights are swapped in");
  if (!ema_) ema_.allocate(size_t(model_.device_total()));
  model_.upload_padded(host, ema_.data());
}

void DeviceOptimizer::ema_update(double decay) {
  KAT_CHECK(ema_ && !ema_swapped_,
            "DeviceOptimizer::ema_update: ", ema_ ? "the EMA weights are swapped in" : "call ema_init first");
  cuda::ema_update(model_.device_total(), ema_.data(), model_.device_params(), decay, model_.stream());
}

void DeviceOptimizer::download_ema(float* host) const {
  KAT_CHECK(ema_, "DeviceOptimizer::download_ema: call ema_init first");
  // Swapped in, the EMA is the model's parameter buffer and ema_ holds the master weights.
  if (ema_swapped_)
    model_.download_params(host);
  else
    model_.download_padded(ema_.data(), host);
}

void DeviceOptimizer::swap_ema() {
  KAT_CHECK(ema_, "DeviceOptimizer::swap_ema: call ema_init first");
  model_.exchange_params(ema_);
  ema_swapped_ = !ema_swapped_;
}

void DeviceOptimizer::download_params(float* host) const {
  if (ema_swapped_)
    model_.download_padded(ema_.data(), host);
  else
    model_.download_params(host);
}

}  // namespace kat
#endif  // KAT_HAVE_CUDA
