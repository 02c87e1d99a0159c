// GpuRunner: the Engine (train/engine.h) on one CUDA GPU, behind a header with no CUDA types so
// the CLI and the trainer compile the same way with or without the CUDA backend. Host buffers in,
// host numbers out: images and soft targets are uploaded to planned device buffers (no allocation
// per step; two of them when training, so uploads can overlap compute), the step runs KatModelCuda
// (bf16 compute, fp32 master weights) and the training layer's DeviceOptimizer (AdamW moments,
// EMA, clipping).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kat/core/dtype.h"
#include "kat/core/rng.h"
#include "kat/model/config.h"
#include "kat/train/engine.h"
#include "kat/train/optim.h"

namespace kat {

// True when this build has the CUDA backend and a GPU is visible.
bool cuda_available(std::string* why = nullptr);

class GpuRunner : public Engine {
 public:
  // dtype: BF16 activations/weights for compute (default), F32 everywhere (checking).
  // training = false: forward only (eval/infer/predict), with a much smaller activation plan and
  // no optimizer state.
  GpuRunner(const ModelConfig& cfg, int device, DType dtype, const AdamWConfig& opt, int max_batch,
            bool training = true);
  ~GpuRunner() override;
  const ModelConfig& config() const override;
  std::string device_name() const override;
  void upload_params(const float* host) override;
  void download_params(float* host) override;
  void download_moments(float* m, float* v) override;
  void upload_moments(const float* m, const float* v, int64_t steps) override;
  int64_t optimizer_steps() const override;
  // --precision fp8 (EXPERIMENTAL until run on a GPU): the blocks' linear layers in FP8
  // (KatModelCuda::enable_fp8, the recipe of src/ops/fp8.h: history 16 passes, margin 0). Needs the
  // bf16 runner and a GPU of compute capability >= 8.9 (kat::Error naming the device otherwise).
  // Call once after construction (it re-plans the model with the FP8 buffers); the weights already
  // uploaded are quantised at once.
  void enable_fp8();
  bool fp8_enabled() const;
  // The amax history (Engine's layout, the CPU emulation's too: checkpoints are shared). Without
  // FP8: Engine's (empty; a non-empty upload is an error).
  void download_fp8_history(std::vector<float>& amax, std::vector<int64_t>& seen) override;
  void upload_fp8_history(const std::vector<float>& amax, const std::vector<int64_t>& seen) override;
  // One optimizer step = begin_step(), accumulate() once per micro-batch, finish_step().
  void begin_step() override;  // zero the gradients
  // Forward (train mode, drop-path from rng) + soft-target loss + backward of one micro-batch,
  // its dlogits divided by accum_steps (gradients add up to the mean over the micro-batches).
  // Returns this micro-batch's loss (synchronises). images / targets null: reuse the batch
  // already on the device.
  double accumulate(const float* images, const float* targets, int B, int accum_steps, Rng* rng);
  // The same split in three, so that a batch's upload overlaps the previous batch's compute (what
  // `kat train` does): stage() copies a micro-batch (images, and targets unless null) to the device
  // on a copy stream and returns once the host buffers may be reused; compute_staged() enqueues
  // forward + loss + backward of the oldest staged batch like accumulate() and returns at once;
  // staged_loss() waits for that batch and returns its loss. Training runners hold two device
  // input buffers, so stage(next) may come between compute_staged() and staged_loss().
  void stage(const float* images, const float* targets, int B) override;
  // stage() of a batch already on this runner's device (fp32 images and targets): converted / copied
  // into the next input slot on the copy stream; returns once the copy is done (the source buffers
  // may then be reused).
  void stage_device(const float* d_images, const float* d_targets, int B) override;
  void compute_staged(int accum_steps, Rng* rng) override;
  double staged_loss() override;
  // clip_max_norm > 0: torch clip_grad_norm_ first. Then AdamW at lr, then the EMA update if on.
  void finish_step(double lr, double clip_max_norm) override;
  // All three for one batch (no accumulation, no clipping). Returns the loss.
  double train_step(const float* images, const float* targets, int B, double lr, Rng* rng);
  double last_grad_norm();  // the norm before the last clip (synchronises)

  // EMA of the weights on the device, updated by every finish_step with `decay`.
  void ema_init(const float* host, double decay) override;
  void download_ema(float* host) override;
  // true: forward() uses the EMA weights until use_ema_weights(false).
  void use_ema_weights(bool on) override;
  // Eval-mode forward; logits (B, classes) and features (B, tokens, D; after the final norm)
  // written to host (each skipped when null). images null: reuse the batch already on the device.
  void forward(const float* images, int B, float* logits, float* features = nullptr);
  // forward() into a host buffer the runner owns: (B, classes) logits, valid until the next call
  // (the contract of KatModel::forward; Engine::logits).
  const float* logits(const float* images, int B) override;
  // logits() of fp32 images already on this runner's device (any B, in chunks of the plan).
  const float* logits_device(const float* d_images, int B) override;
  void synchronize() override;
  // Eval-mode forwards through CUDA graphs (KatModelCuda::set_cuda_graphs; opt-in, experimental:
  // `kat bench infer --cuda-graph`). False when the model's graphs were turned off (a failed capture).
  void set_cuda_graphs(bool on);
  bool cuda_graphs() const;
  // For GpuGroup (multi-GPU): the device, the fp32 gradient buffer on it (device_grad_count()
  // floats, padded layout), and the compute stream (a cudaStream_t).
  int device() const;
  float* device_grads();
  int64_t device_grad_count() const;
  void* stream_handle();
  // The attention implementation its model runs, "ours" or "cudnn" (the request of --attention /
  // KAT_ATTENTION where cuDNN can run it; src/ops/attention_backend.h).
  const char* attention_name() const;
  // Device memory this runner holds (weights, gradients, moments, activation arena, workspaces,
  // cuBLASLt): the drop in free device memory since construction began.
  std::size_t device_bytes_in_use() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kat
