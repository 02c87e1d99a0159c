// The CUDA path of the trainer and of `kat bench`, behind a header with no CUDA types so the CLI
// and the trainer compile the same way with or without the CUDA backend. Host buffers in, host
// numbers out: images and soft targets are uploaded to planned device buffers (no allocation per
// step), the step runs KatModelCuda (bf16 compute, fp32 master weights and AdamW state).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "core/rng.h"
#include "model/config.h"
#include "train/optim.h"

namespace kat {

// "cpu" -> -1; "cuda" -> 0; "cuda:N" -> N. Anything else is an error naming the flag.
int parse_device(const std::string& device);
// True when this build has the CUDA backend and a GPU is visible.
bool cuda_available(std::string* why = nullptr);

class GpuRunner {
 public:
  // bf16: bf16 activations/weights for compute (default); false: fp32 everywhere (checking).
  GpuRunner(const ModelConfig& cfg, int device, bool bf16, const AdamWConfig& opt, int max_batch);
  ~GpuRunner();
  void upload_params(const float* host);
  void download_params(float* host);
  void download_moments(float* m, float* v);
  void upload_moments(const float* m, const float* v, int64_t steps);
  // One optimizer step on a batch: forward (drop-path from rng) + loss + backward + AdamW at lr.
  // Returns the loss (synchronises). images / targets null: reuse the batch already on the device.
  double train_step(const float* images, const float* targets, int B, double lr, Rng* rng);
  // Eval-mode forward; logits (B, classes) written to host (skipped when null). images null: reuse
  // the batch already on the device.
  void forward(const float* images, int B, float* logits);
  void synchronize();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kat
