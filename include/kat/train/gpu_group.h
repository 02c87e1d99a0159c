// Training on one or several GPUs of one host, in one process. One GpuRunner (a model replica) per
// device; every micro-batch is split into equal contiguous shards, one per replica; after the last
// micro-batch of a step the replicas' fp32 gradients are summed by one NCCL all-reduce, and every
// replica applies the same clipping / AdamW / EMA step, so the replicas stay identical (the kernels
// are deterministic). Each replica divides its dlogits by (accumulation x replicas), so the summed
// gradient is the mean over the global batch, as on one GPU. Drop-path: replica 0 draws from the
// caller's Rng (so one device is exactly a GpuRunner), replica r > 0 from an Rng seeded by a draw
// of it. With one device there is no NCCL at all; several need a build with NCCL (KAT_NCCL).
// Every replica is driven by its own host thread (ReplicaPool: stage, launch, all-reduce, optimizer
// at once on all devices); the methods below return when every replica's part is enqueued/done.
// GpuGroup is the Engine (train/engine.h) of `kat train --device cuda[:N[,M...]]`.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kat/core/replica_pool.h"
#include "kat/core/rng.h"
#include "kat/model/config.h"
#include "kat/train/engine.h"
#include "kat/train/gpu_runner.h"
#include "kat/train/optim.h"

namespace kat {

class GpuGroup : public Engine {
 public:
  // max_batch: the global micro-batch (divisible by the device count). Evaluation runs on replica
  // 0 (GpuRunner::forward takes any batch, in chunks of its planned maximum).
  GpuGroup(const ModelConfig& cfg, const std::vector<int>& devices, const AdamWConfig& opt, int max_batch);
  ~GpuGroup() override;
  GpuGroup(const GpuGroup&) = delete;
  GpuGroup& operator=(const GpuGroup&) = delete;

  int size() const { return int(replicas_.size()); }
  GpuRunner& primary() { return *replicas_[0]; }  // evaluation, downloads
  GpuRunner& replica(int i) { return *replicas_.at(size_t(i)); }

  const ModelConfig& config() const override { return replicas_[0]->config(); }
  std::string device_name() const override { return name_; }

  // To every replica.
  void upload_params(const float* host) override;
  void upload_moments(const float* m, const float* v, int64_t steps) override;
  void ema_init(const float* host, double decay) override;
  // From replica 0 (all hold the same values).
  void download_params(float* host) override { primary().download_params(host); }
  void download_moments(float* m, float* v) override { primary().download_moments(m, v); }
  int64_t optimizer_steps() const override { return replicas_[0]->optimizer_steps(); }
  void download_ema(float* host) override { primary().download_ema(host); }
  // Evaluation runs on replica 0.
  void use_ema_weights(bool on) override { primary().use_ema_weights(on); }
  const float* logits(const float* images, int B) override { return primary().logits(images, B); }
  const float* logits_device(const float* d_images, int B) override {
    return primary().logits_device(d_images, B);
  }

  // One optimizer step: begin_step(), then per micro-batch stage() (the global batch, B divisible
  // by size()) / compute_staged() / staged_loss(), then finish_step(). As GpuRunner's.
  void begin_step() override;
  void stage(const float* images, const float* targets, int B) override;
  // One GPU: GpuRunner::stage_device. Several: refused (the batch would have to be split across
  // devices; the GPU data pipeline feeds one device).
  void stage_device(const float* d_images, const float* d_targets, int B) override;
  void compute_staged(int accum_steps, Rng* rng) override;
  double staged_loss() override;  // mean over the replicas' shards
  void finish_step(double lr, double clip_max_norm) override;
  void synchronize() override;        // every replica's stream
  std::size_t device_bytes_in_use();  // summed over the replicas

 private:
  struct Comms;
  void each(const std::function<void(GpuRunner&, int)>& f);  // f(replica r, r) on every replica at once
  std::vector<std::unique_ptr<GpuRunner>> replicas_;
  std::unique_ptr<ReplicaPool> pool_;
  std::unique_ptr<Comms> comms_;
  int image_elems_per_sample_ = 0, classes_ = 0;
  std::string name_;  // "cuda:0,1"
};

}  // namespace kat
