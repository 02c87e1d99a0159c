// DeviceOptimizer: the training layer's AdamW, EMA and gradient clipping for a KatModelCuda, on the
// model's device and stream, over its padded parameter layout (ModelLayout, kCudaAlign). The same
// math as the CPU optimizer (train/optim.h: kat::AdamW, ema_update, clip_grad_norm), run by the
// optimizer kernels on the model's device_params() / device_grads() / working_weights().
//
// State: fp32 AdamW moments m, v and the per-element decay mask (ModelLayout::decay_mask, the one
// weight-decay rule), the clipping workspace, and the EMA (allocated by ema_init). Everything is
// held in owning device buffers; nothing is allocated per step and nothing synchronises except the
// downloads and last_grad_norm().
// Without KAT_HAVE_CUDA this header declares nothing.
#pragma once
#ifdef KAT_HAVE_CUDA
#include <cstdint>

#include "kat/train/optim.h"  // AdamWConfig
#include "model/kat_model_cuda.h"
#include "ops/cuda/device_memory.h"

namespace kat {

class DeviceOptimizer {
 public:
  // Allocates the moments (zero), the decay mask and the clipping workspace on the model's device.
  DeviceOptimizer(KatModelCuda& model, const AdamWConfig& cfg);

  // One AdamW step at lr (torch semantics, as kat::AdamW::step); refreshes the model's bf16
  // working copy. Not while the EMA is swapped in.
  void step(double lr);
  int64_t steps() const { return t_; }
  // Moments in the flat CPU table layout (checkpoints) and back (resume, with the step count).
  void download_moments(float* m_host, float* v_host) const;
  void upload_moments(const float* m_host, const float* v_host, int64_t steps);

  // torch clip_grad_norm_ over all gradients, on the device (deterministic, no synchronisation).
  void clip_grad_norm(double max_norm);
  double last_grad_norm() const;  // synchronises; the norm before the last clip_grad_norm

  // EMA of the fp32 master weights (padded layout, like the parameters).
  void ema_init(const float* host);  // allocates on the first call; host: the flat layout
  void ema_update(double decay);     // ema = decay ema + (1 - decay) params (kat::ema_update)
  bool has_ema() const { return bool(ema_); }
  void download_ema(float* host) const;
  // Exchange the model's master weights with the EMA (KatModelCuda::exchange_params): call once to
  // evaluate the EMA weights, once more to go back. ema_swapped() says which state the model is in.
  void swap_ema();
  bool ema_swapped() const { return ema_swapped_; }
  // The master weights in the flat layout, also while the EMA is swapped in.
  void download_params(float* host) const;

 private:
  KatModelCuda& model_;
  AdamWConfig cfg_;
  int64_t t_ = 0;
  cuda::DeviceBuffer<float> m_, v_, ema_;  // (device_total)
  cuda::DeviceBuffer<uint8_t> decay_;      // (device_total) 1 = weight decay applies
  cuda::DeviceBuffer<char> clip_ws_;
  bool ema_swapped_ = false;
};

}  // namespace kat
#endif  // KAT_HAVE_CUDA
