#include "kat/train/cpu_engine.h"

#include <algorithm>
#include <cstring>

#include "kat/core/error.h"
#include "ops/cpu_ops.h"

namespace kat {

CpuEngine::CpuEngine(KatModel& model, const AdamWConfig& opt, bool training) : model_(model) {
  if (training) opt_ = std::make_unique<AdamW>(model.table(), opt);
}

AdamW& CpuEngine::optimizer() {
  KAT_CHECK(opt_ != nullptr, "CpuEngine: this engine is for inference only (no optimizer)");
  return *opt_;
}

void CpuEngine::upload_params(const float* host) {
  KAT_CHECK(!ema_in_use_, "CpuEngine::upload_params: the EMA weights are in use (use_ema_weights(false) first)");
  if (host != model_.params.data()) std::copy_n(host, model_.params.size(), model_.params.data());
}

void CpuEngine::download_params(float* host) {
  const std::vector<float>& master = ema_in_use_ ? ema_ : model_.params;
  if (host != master.data()) std::copy(master.begin(), master.end(), host);
}

void CpuEngine::upload_moments(const float* m, const float* v, int64_t steps) {
  AdamW& o = optimizer();
  std::copy_n(m, o.m.size(), o.m.data());
  std::copy_n(v, o.v.size(), o.v.data());
  o.set_steps(steps);
}

void CpuEngine::download_moments(float* m, float* v) {
  AdamW& o = optimizer();
  std::copy(o.m.begin(), o.m.end(), m);
  std::copy(o.v.begin(), o.v.end(), v);
}

void CpuEngine::download_fp8_history(std::vector<float>& amax, std::vector<int64_t>& seen) {
  if (model_.fp8_enabled())
    model_.get_fp8_history(amax, seen);
  else
    Engine::download_fp8_history(amax, seen);
}

void CpuEngine::upload_fp8_history(const std::vector<float>& amax, const std::vector<int64_t>& seen) {
  if (model_.fp8_enabled())
    model_.set_fp8_history(amax, seen);
  else
    Engine::upload_fp8_history(amax, seen);
}

int64_t CpuEngine::optimizer_steps() const { return opt_ ? opt_->steps() : 0; }

void CpuEngine::ema_init(const float* host, double decay) {
  KAT_CHECK(decay > 0 && decay < 1, "CpuEngine: EMA decay must be in (0, 1), got ", decay);
  KAT_CHECK(!ema_in_use_, "CpuEngine::ema_init: the EMA weights are in use");
  ema_.assign(host, host + model_.params.size());
  ema_decay_ = decay;
}

void CpuEngine::download_ema(float* host) {
  KAT_CHECK(!ema_.empty(), "CpuEngine::download_ema: call ema_init first");
  const std::vector<float>& e = ema_in_use_ ? model_.params : ema_;
  std::copy(e.begin(), e.end(), host);
}

void CpuEngine::use_ema_weights(bool on) {
  if (on == ema_in_use_) return;
  KAT_CHECK(!ema_.empty(), "CpuEngine::use_ema_weights: call ema_init first");
  model_.params.swap(ema_);
  ema_in_use_ = on;
}

void CpuEngine::begin_step() {
  KAT_CHECK(!ema_in_use_, "CpuEngine: the EMA weights are in use (use_ema_weights(false) before training)");
  model_.zero_grad();
}

void CpuEngine::stage(const float* images, const float* targets, int B) {
  KAT_CHECK(images && targets, "CpuEngine::stage: images and targets are needed");
  KAT_CHECK(!pending_, "CpuEngine::stage: a batch is already staged and not computed");
  const ModelConfig& c = model_.config();
  images_.assign(images, images + size_t(B) * c.in_chans * c.img_size * c.img_size);
  targets_.assign(targets, targets + size_t(B) * c.num_classes);
  staged_B_ = B;
  pending_ = true;
}

void CpuEngine::compute_staged(int accum_steps, Rng* rng) {
  KAT_CHECK(pending_, "CpuEngine::compute_staged: nothing staged");
  KAT_CHECK(accum_steps >= 1, "CpuEngine: accum_steps must be >= 1, got ", accum_steps);
  pending_ = false;
  const int B = staged_B_, K = model_.config().num_classes;
  if (model_.planned_batch() < B) model_.plan(B);
  const float* z = model_.forward(images_.data(), B, true, rng);
  dz_.resize(size_t(B) * K);
  // Smoothing/mixing are already in the targets (the loader applies them): ls = 0 here.
  loss_ = ops::softmax_xent<float>(B, K, z, targets_.data(), 0.0f, dz_.data());
  if (accum_steps > 1)
    for (auto& v : dz_) v /= float(accum_steps);
  model_.backward(dz_.data());
}

void CpuEngine::finish_step(double lr, double clip_max_norm) {
  AdamW& o = optimizer();
  if (clip_max_norm > 0) clip_grad_norm(model_.grads, clip_max_norm);
  o.step(model_.params.data(), model_.grads.data(), lr);
  if (!ema_.empty()) ema_update(ema_, model_.params, ema_decay_);
}

const float* CpuEngine::logits(const float* images, int B) {
  if (model_.planned_batch() < B) model_.plan(B);
  return model_.forward(images, B);
}

}  // namespace kat
