// Engine: the one backend interface of training and inference. The trainer (train/trainer.h),
// evaluation (train/evaluate.h), `kat bench` and the inference commands drive a model through it,
// whatever runs it:
//
//   CpuEngine  (train/cpu_engine.h)  KatModel + kat::AdamW / EMA / clipping on the host
//   GpuRunner  (train/gpu_runner.h)  KatModelCuda + DeviceOptimizer on one GPU
//   GpuGroup   (train/gpu_group.h)   GpuRunner replicas on several GPUs, NCCL all-reduce
//
// One optimizer step:
//   begin_step();                                   zero the gradients
//   per micro-batch: stage(images, targets, B);     hand over a batch (GPU: upload, overlapped;
//                                                   stage_device: a batch already on the GPU)
//                    compute_staged(accum, &rng);   forward (train mode, drop-path from rng) +
//                                                   loss + backward, dlogits / accum
//                    staged_loss();                 that micro-batch's loss
//   finish_step(lr, clip);                          clip (clip > 0), AdamW at lr, EMA (if on)
// stage(next) may come between compute_staged() and staged_loss(), so the next upload overlaps
// this compute. Host buffers passed to stage() may be reused once it returns.
//
// Host state is in KatModel's flat table layout (num_params floats): upload/download of weights,
// AdamW moments and EMA are how checkpoints are written and resumed, on every backend the same.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kat/core/error.h"
#include "kat/core/rng.h"
#include "kat/model/config.h"

namespace kat {

class Engine {
 public:
  virtual ~Engine() = default;

  virtual const ModelConfig& config() const = 0;
  // "cpu", "cuda:0", "cuda:0,1": where the engine runs, for messages.
  virtual std::string device_name() const = 0;

  // Weights and optimizer state, host side in the flat table layout. Synchronous.
  virtual void upload_params(const float* host) = 0;
  virtual void download_params(float* host) = 0;  // the master weights, also with the EMA in use
  virtual void upload_moments(const float* m, const float* v, int64_t steps) = 0;
  virtual void download_moments(float* m, float* v) = 0;
  virtual int64_t optimizer_steps() const = 0;

  // FP8 training (TrainConfig::precision "fp8"): the amax history of the delayed-scaled tensors,
  // host side, for checkpoints: amax (slots, length) and seen (slots) in the layout of the recipe's
  // Fp8AmaxHistory (src/ops/fp8.h). An engine that does not train in FP8 has none: download gives
  // empty vectors, and uploading a non-empty history is an error.
  virtual void download_fp8_history(std::vector<float>& amax, std::vector<int64_t>& seen) {
    amax.clear();
    seen.clear();
  }
  virtual void upload_fp8_history(const std::vector<float>& amax, const std::vector<int64_t>& seen) {
    KAT_CHECK(amax.empty() && seen.empty(), device_name(),
              ": this engine does not train in FP8 (--precision fp8), so it has no amax history to restore");
  }

  // EMA of the weights, updated by every finish_step with `decay`.
  virtual void ema_init(const float* host, double decay) = 0;
  virtual void download_ema(float* host) = 0;
  // true: logits() uses the EMA weights until use_ema_weights(false).
  virtual void use_ema_weights(bool on) = 0;

  // The training step (see above).
  virtual void begin_step() = 0;
  virtual void stage(const float* images, const float* targets, int B) = 0;
  // stage() of a micro-batch already in this engine's device memory (the GPU data pipeline,
  // data/cuda/gpu_loader.h): images (B, C, H, W) and targets (B, classes), both fp32. The device
  // buffers may be reused once it returns. Engines that take host memory only refuse.
  virtual void stage_device(const float* d_images, const float* d_targets, int B) {
    (void)d_images, (void)d_targets, (void)B;
    throw Error(device_name() + ": this engine takes batches from host memory only (stage_device)");
  }
  virtual void compute_staged(int accum_steps, Rng* rng) = 0;
  virtual double staged_loss() = 0;
  virtual void finish_step(double lr, double clip_max_norm) = 0;
  // Where the last training forward first went non-finite ("blocks.3.mlp.act2 output"), when the
  // backend can tell (the CPU); "" otherwise.
  virtual std::string first_nonfinite() { return ""; }

  // Eval-mode forward of images (B, C, H, W) fp32 on the host -> logits (B, classes) fp32 in a
  // host buffer the engine owns, valid until the next call. Any B (chunked or re-planned).
  virtual const float* logits(const float* images, int B) = 0;
  // logits() of images (B, C, H, W) fp32 already in this engine's device memory (the GPU data
  // pipeline). Engines that take host memory only refuse.
  virtual const float* logits_device(const float* d_images, int B) {
    (void)d_images, (void)B;
    throw Error(device_name() + ": this engine takes images from host memory only (logits_device)");
  }
  // Wait for everything enqueued.
  virtual void synchronize() {}

  // One process of a multi-process job (GpuGroup over processes): v[0..n) summed over the job's
  // processes, in place, the same result on every process. One process: v unchanged.
  virtual void all_reduce_sum(double* v, int n) { (void)v, (void)n; }
  // Processes in the job this engine belongs to (1: this process alone).
  virtual int process_count() const { return 1; }
};

}  // namespace kat
