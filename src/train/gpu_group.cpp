#include "kat/train/gpu_group.h"

#include <algorithm>

#include "kat/core/error.h"
#include "kat/data/augment.h"  // seed_hash

#ifdef KAT_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace kat {

#ifdef KAT_HAVE_NCCL
struct GpuGroup::Comms {
  std::vector<ncclComm_t> comms;
  ~Comms() {
    for (ncclComm_t c : comms)
      if (c) ncclCommDestroy(c);
  }
};
#define KAT_NCCL_CHECK(call)                                                            \
  do {                                                                                  \
    const ncclResult_t r_ = (call);                                                     \
    KAT_CHECK(r_ == ncclSuccess, "NCCL: ", #call, " failed: ", ncclGetErrorString(r_)); \
  } while (0)
#else
struct GpuGroup::Comms {};
#endif

GpuGroup::GpuGroup(const ModelConfig& cfg, const std::vector<int>& devices, const AdamWConfig& opt,
                   int max_batch) {
  const int n = int(devices.size());
  KAT_CHECK(n >= 1, "GpuGroup: no GPU given");
  KAT_CHECK(max_batch % n == 0, "--batch ", max_batch, " must be divisible by the ", n,
            " GPUs of --device (each gets an equal shard)");
  std::string list;
  for (int d : devices) list += (list.empty() ? "" : ",") + std::to_string(d);
  name_ = "cuda:" + list;
  std::string why;
  KAT_CHECK(cuda_available(&why), "--device cuda:", list, ": CUDA is not usable here (", why, ")");
#ifndef KAT_HAVE_NCCL
  KAT_CHECK(n == 1, "--device cuda:", list, ": ", n,
            " GPUs need a build with NCCL (configure with -DKAT_NCCL=ON; NCCL comes ",
            "with PyTorch's nvidia-nccl-cu* wheel or NVIDIA's libnccl-dev)");
#endif
  image_elems_per_sample_ = cfg.in_chans * cfg.img_size * cfg.img_size;
  classes_ = cfg.num_classes;
  replicas_.resize(size_t(n));
  pool_ = std::make_unique<ReplicaPool>(n);
  // Built on their own threads too: each replica's plan, weights and pinned slots take a while.
  pool_->run([&](int r) {
    replicas_[size_t(r)] = std::make_unique<GpuRunner>(cfg, devices[size_t(r)], DType::BF16, opt, max_batch / n);
  });
  comms_ = std::make_unique<Comms>();
#ifdef KAT_HAVE_NCCL
  if (n > 1) {
    comms_->comms.assign(size_t(n), nullptr);
    KAT_NCCL_CHECK(ncclCommInitAll(comms_->comms.data(), n, devices.data()));
  }
#endif
}

GpuGroup::~GpuGroup() = default;

void GpuGroup::each(const std::function<void(GpuRunner&, int)>& f) {
  pool_->run([&](int r) { f(*replicas_[size_t(r)], r); });
}

void GpuGroup::upload_params(const float* host) {
  each([&](GpuRunner& g, int) { g.upload_params(host); });
}
void GpuGroup::upload_moments(const float* m, const float* v, int64_t steps) {
  each([&](GpuRunner& g, int) { g.upload_moments(m, v, steps); });
}
void GpuGroup::ema_init(const float* host, double decay) {
  each([&](GpuRunner& g, int) { g.ema_init(host, decay); });
}
void GpuGroup::begin_step() {
  each([](GpuRunner& g, int) { g.begin_step(); });
}

void GpuGroup::stage(const float* images, const float* targets, int B) {
  const int n = size();
  KAT_CHECK(B % n == 0, "batch of ", B, " images cannot be split evenly over ", n, " GPUs");
  const int shard = B / n;
  each([&](GpuRunner& g, int r) {
    g.stage(images + size_t(r) * shard * image_elems_per_sample_,
            targets ? targets + size_t(r) * shard * classes_ : nullptr, shard);
  });
}

void GpuGroup::stage_device(const float* d_images, const float* d_targets, int B) {
  KAT_CHECK(size() == 1, name_, ": a batch in device memory (--decode gpu) feeds one GPU; with ", size(),
            " GPUs use --decode cpu");
  primary().stage_device(d_images, d_targets, B);
}

void GpuGroup::compute_staged(int accum_steps, Rng* rng) {
  const int n = size();
  // Replica r > 0 draws drop-path from its own Rng, seeded before any replica runs (they run at
  // once); replica 0 from the caller's, so that one GPU is exactly a GpuRunner.
  std::vector<Rng> own;
  for (int r = 1; r < n; ++r) own.emplace_back(data::seed_hash({rng ? rng->next_u64() : 0u, uint64_t(r)}));
  each([&](GpuRunner& g, int r) { g.compute_staged(accum_steps * n, r == 0 ? rng : &own[size_t(r - 1)]); });
}

double GpuGroup::staged_loss() {
  std::vector<double> loss(static_cast<size_t>(size()));
  each([&](GpuRunner& g, int r) { loss[size_t(r)] = g.staged_loss(); });
  double sum = 0;
  for (double l : loss) sum += l;  // in replica order: deterministic
  return sum / size();
}

void GpuGroup::finish_step(double lr, double clip_max_norm) {
  each([&](GpuRunner& g, int r) {
#ifdef KAT_HAVE_NCCL
    // Sum of the replicas' gradients, in place on each compute stream (after its backward, before
    // its optimizer step); one thread per communicator, as NCCL's one-thread-per-GPU model.
    if (size() > 1) {
      float* grads = g.device_grads();  // (makes the replica's device current)
      KAT_NCCL_CHECK(ncclAllReduce(grads, grads, size_t(g.device_grad_count()), ncclFloat, ncclSum,
                                   comms_->comms[size_t(r)], static_cast<cudaStream_t>(g.stream_handle())));
    }
#else
    (void)r;
#endif
    g.finish_step(lr, clip_max_norm);
  });
}

void GpuGroup::synchronize() {
  each([](GpuRunner& g, int) { g.synchronize(); });
}

std::size_t GpuGroup::device_bytes_in_use() {
  std::size_t sum = 0;
  for (auto& r : replicas_) sum += r->device_bytes_in_use();
  return sum;
}

}  // namespace kat
