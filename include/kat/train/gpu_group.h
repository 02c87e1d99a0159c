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
//
// Several processes (torchrun / Slurm, one process per GPU): the same class with one local replica
// and a communicator spanning the processes (ProcessGroup; ncclCommInitRank after rank 0's unique id
// went round). Every process stages its own shard of the global micro-batch; dlogits are divided by
// (accumulation x processes), the gradients summed by the same ncclAllReduce, so the step is the
// one-process group's up to the order of the sum. staged_loss() is the mean over the processes. A
// watchdog thread polls ncclCommGetAsyncError and times every call that may wait on a peer: an
// asynchronous NCCL error, or a call waiting longer than ProcessGroup::timeout_s, aborts the
// communicator (ncclCommAbort) and ends the process with a message saying so, instead of hanging.
#pragma once
#include <cstdint>
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

// This process's place in a multi-process job (kat train under torchrun / srun).
struct ProcessGroup {
  int rank = 0, world_size = 1;
  // Hands rank 0's blob (the 128-byte NCCL unique id) to every rank and returns it, on every rank:
  // dist::share_from_rank0 over the rendezvous in kat train.
  std::function<std::vector<uint8_t>(const std::vector<uint8_t>&)> share_from_rank0;
  double timeout_s = 600;  // --dist-timeout: the longest wait on a peer before the job is aborted
};

class GpuGroup : public Engine {
 public:
  // max_batch: the global micro-batch (divisible by the device count). Evaluation runs on replica
  // 0 (GpuRunner::forward takes any batch, in chunks of its planned maximum).
  GpuGroup(const ModelConfig& cfg, const std::vector<int>& devices, const AdamWConfig& opt, int max_batch);
  // One process of a multi-process job, on GPU `device`. local_batch: this process's share of the
  // global micro-batch (global batch / world size). Needs a build with NCCL.
  GpuGroup(const ModelConfig& cfg, int device, const AdamWConfig& opt, int local_batch, const ProcessGroup& pg);
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
  void download_params(float* host) override;
  void download_moments(float* m, float* v) override;
  int64_t optimizer_steps() const override { return replicas_[0]->optimizer_steps(); }
  // --precision fp8 (GpuRunner::enable_fp8): one GPU in one process only for now. Replicas see
  // different shards, so each would need its own amax history (or an all-reduce of the amaxes before
  // every scale) and a checkpoint would have to hold them all; until that is decided, several GPUs
  // or processes are refused with a kat::Error.
  void enable_fp8();
  void download_fp8_history(std::vector<float>& amax, std::vector<int64_t>& seen) override;
  void upload_fp8_history(const std::vector<float>& amax, const std::vector<int64_t>& seen) override;
  void download_ema(float* host) override;
  // Evaluation runs on replica 0.
  void use_ema_weights(bool on) override;
  const float* logits(const float* images, int B) override;
  const float* logits_device(const float* d_images, int B) override;

  // One optimizer step: begin_step(), then per micro-batch stage() (the global batch, B divisible
  // by size(); several processes: this process's shard) / compute_staged() / staged_loss(), then
  // finish_step(). As GpuRunner's.
  void begin_step() override;
  void stage(const float* images, const float* targets, int B) override;
  // One GPU: GpuRunner::stage_device. Several: refused (the batch would have to be split across
  // devices; the GPU data pipeline feeds one device).
  void stage_device(const float* d_images, const float* d_targets, int B) override;
  void compute_staged(int accum_steps, Rng* rng) override;
  double staged_loss() override;  // mean over the replicas' shards (and processes)
  void finish_step(double lr, double clip_max_norm) override;
  void synchronize() override;  // every replica's stream
  void all_reduce_sum(double* v, int n) override;
  int process_count() const override { return world_; }
  std::size_t device_bytes_in_use();  // summed over the replicas

 private:
  struct Comms;
  void each(const std::function<void(GpuRunner&, int)>& f);  // f(replica r, r) on every replica at once
  int comms_rank() const;                                    // this process's rank (0 in one process)
  std::vector<std::unique_ptr<GpuRunner>> replicas_;
  std::unique_ptr<ReplicaPool> pool_;
  std::unique_ptr<Comms> comms_;
  int image_elems_per_sample_ = 0, classes_ = 0;
  std::string name_;  // "cuda:0,1"; "cuda:3 (rank 5 of 8)"
  int world_ = 1;     // processes in the job (ProcessGroup::world_size)
};

}  // namespace kat
