// CpuEngine: the Engine (train/engine.h) on the host: KatModel's forward/backward, the host
// softmax cross-entropy, and kat::AdamW / ema_update / clip_grad_norm (train/optim.h).
//
// The engine computes on a KatModel it does not own: its params are the engine's weights (so
// upload/download from/to model.params are no-ops and the caller's model is always current).
// stage() copies the batch (the caller may reuse its buffers); compute_staged() runs at once.
// FP8 (--precision fp8): the model's emulation (KatModel::enable_fp8, called before the engine
// trains); its amax history is the model's.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "kat/model/kat_model.h"
#include "kat/train/engine.h"
#include "kat/train/optim.h"

namespace kat {

class CpuEngine : public Engine {
 public:
  // training = false: inference only (no optimizer state; the step calls are errors).
  CpuEngine(KatModel& model, const AdamWConfig& opt, bool training = true);
  explicit CpuEngine(KatModel& model) : CpuEngine(model, AdamWConfig{}, false) {}

  KatModel& model() { return model_; }
  const ModelConfig& config() const override { return model_.config(); }
  std::string device_name() const override { return "cpu"; }

  void upload_params(const float* host) override;
  void download_params(float* host) override;
  void upload_moments(const float* m, const float* v, int64_t steps) override;
  void download_moments(float* m, float* v) override;
  int64_t optimizer_steps() const override;

  void ema_init(const float* host, double decay) override;
  void download_ema(float* host) override;
  void use_ema_weights(bool on) override;

  void begin_step() override;
  void stage(const float* images, const float* targets, int B) override;
  void compute_staged(int accum_steps, Rng* rng) override;
  double staged_loss() override { return loss_; }
  void finish_step(double lr, double clip_max_norm) override;
  std::string first_nonfinite() override { return model_.first_nonfinite(); }
  void download_fp8_history(std::vector<float>& amax, std::vector<int64_t>& seen) override;
  void upload_fp8_history(const std::vector<float>& amax, const std::vector<int64_t>& seen) override;

  const float* logits(const float* images, int B) override;

 private:
  AdamW& optimizer();  // throws for an inference-only engine
  KatModel& model_;
  std::unique_ptr<AdamW> opt_;
  std::vector<float> ema_;  // (num_params) EMA, or the master weights while the EMA is in use
  double ema_decay_ = 0;
  bool ema_in_use_ = false;
  std::vector<float> images_, targets_, dz_;  // the staged batch; dlogits (B, K)
  int staged_B_ = 0;
  bool pending_ = false;
  double loss_ = 0;
};

}  // namespace kat
