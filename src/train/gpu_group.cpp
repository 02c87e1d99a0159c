#include "kat/train/gpu_group.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include "kat/core/error.h"
#include "kat/data/augment.h"  // seed_hash

#ifdef KAT_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace kat {

namespace {
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

#ifdef KAT_HAVE_NCCL
#define KAT_NCCL_CHECK(call)                                                            \
  do {                                                                                  \
    const ncclResult_t r_ = (call);                                                     \
    KAT_CHECK(r_ == ncclSuccess, "NCCL: ", #call, " failed: ", ncclGetErrorString(r_)); \
  } while (0)
#define KAT_CUDA_CHECK(call)                                                            \
  do {                                                                                  \
    const cudaError_t e_ = (call);                                                      \
    KAT_CHECK(e_ == cudaSuccess, "CUDA: ", #call, " failed: ", cudaGetErrorString(e_)); \
  } while (0)

struct GpuGroup::Comms {
  std::vector<ncclComm_t> comms;  // one per local replica

  // ---- several processes only (ProcessGroup) ----
  int rank = 0, world = 1;
  double timeout_s = 0;  // 0: no watchdog (one process)
  // The host is inside a call that may wait on a peer since this time (ns, steady clock; 0: not).
  std::atomic<int64_t> waiting_since{0};
  std::atomic<const char*> waiting_in{""};
  int wait_depth = 0;                        // nested marks (the main thread only)
  std::atomic<ncclComm_t> watched{nullptr};  // the communicator, once initialised
  double* d_sums = nullptr;                  // all_reduce_sum's device buffer
  size_t d_sums_n = 0;
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::thread watchdog;

  ~Comms() {
    if (watchdog.joinable()) {
      {
        std::lock_guard<std::mutex> lk(mu);
        stop = true;
      }
      cv.notify_all();
      watchdog.join();
    }
    if (d_sums) cudaFree(d_sums);
    for (ncclComm_t c : comms)
      if (c) ncclCommDestroy(c);
  }

  // Polls every 100 ms: an asynchronous NCCL error (a peer's connection broke), or a call waiting
  // on the others for longer than timeout_s, ends the process: the other ranks' waits then fail
  // or time out the same way, so the whole job stops instead of hanging.
  void start_watchdog() {
    watchdog = std::thread([this] {
      std::unique_lock<std::mutex> lk(mu);
      while (!cv.wait_for(lk, std::chrono::milliseconds(100), [this] { return stop; })) {
        const ncclComm_t c = watched.load();
        if (c) {
          ncclResult_t async = ncclSuccess;
          const ncclResult_t q = ncclCommGetAsyncError(c, &async);
          if (q == ncclSuccess && async != ncclSuccess && async != ncclInProgress)
            fail(detail::concat("NCCL reported an asynchronous error: ", ncclGetErrorString(async), " (",
                                ncclGetLastError(c), ")"));
        }
        const int64_t since = waiting_since.load();
        if (since != 0 && double(now_ns() - since) * 1e-9 > timeout_s)
          fail(detail::concat(waiting_in.load(), " has waited more than ", timeout_s,
                              " s (--dist-timeout) for the other processes"));
      }
    });
  }

  [[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr,
                 "kat: rank %d of %d: %s. A process of the job died or hangs: aborting the NCCL communicator and "
                 "exiting (the other ranks stop the same way). Continue from the last checkpoint with `kat train "
                 "--resume RUN_DIR` under the same launcher.\n",
                 rank, world, what.c_str());
    std::fflush(stderr);
    // The abort frees the peers' connections (their NCCL calls fail instead of waiting out their own
    // timeout); it gets 10 s, as it could itself wait on a broken peer.
    if (const ncclComm_t c = watched.exchange(nullptr)) {
      auto done = std::make_shared<std::atomic<bool>>(false);
      std::thread([c, done] {
        ncclCommAbort(c);
        done->store(true);
      }).detach();
      for (int i = 0; i < 100 && !done->load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    std::_Exit(3);
  }
};
#else
struct GpuGroup::Comms {
  int wait_depth = 0;
  double timeout_s = 0;
  std::atomic<int64_t> waiting_since{0};
  std::atomic<const char*> waiting_in{""};
};
#endif

namespace {
// Marks a GpuGroup call that may wait on the other processes (a stream holding an all-reduce, the
// all-reduce of a scalar): the watchdog times it. Nested marks keep the outermost start.
template <class C>
class WaitMark {
 public:
  WaitMark(C* c, const char* what) : c_(c && c->timeout_s > 0 ? c : nullptr) {
    if (c_ && c_->wait_depth++ == 0) {
      c_->waiting_in.store(what);
      c_->waiting_since.store(now_ns());
    }
  }
  ~WaitMark() {
    if (c_ && --c_->wait_depth == 0) c_->waiting_since.store(0);
  }
  WaitMark(const WaitMark&) = delete;
  WaitMark& operator=(const WaitMark&) = delete;

 private:
  C* c_;
};
template <class C>
WaitMark(C*, const char*) -> WaitMark<C>;
}  // namespace
#define KAT_WAIT_MARK(what) const WaitMark wait_mark_(comms_.get(), what)

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

GpuGroup::GpuGroup(const ModelConfig& cfg, int device, const AdamWConfig& opt, int local_batch,
                   const ProcessGroup& pg) {
  KAT_CHECK(pg.world_size >= 2 && pg.rank >= 0 && pg.rank < pg.world_size, "GpuGroup: rank ", pg.rank,
            " of a job of ", pg.world_size, " processes");
  KAT_CHECK(pg.share_from_rank0, "GpuGroup: no way to share the NCCL id (ProcessGroup::share_from_rank0)");
  KAT_CHECK(pg.timeout_s > 0, "--dist-timeout must be > 0 seconds, got ", pg.timeout_s);
  name_ = detail::concat("cuda:", device, " (rank ", pg.rank, " of ", pg.world_size, ")");
  std::string why;
  KAT_CHECK(cuda_available(&why), name_, ": CUDA is not usable here (", why, ")");
#ifndef KAT_HAVE_NCCL
  (void)cfg, (void)opt, (void)local_batch;
  throw Error(name_ +
              ": a job of several processes needs a build with NCCL (configure with -DKAT_NCCL=ON; NCCL "
              "comes with PyTorch's nvidia-nccl-cu* wheel or NVIDIA's libnccl-dev)");
#else
  world_ = pg.world_size;
  image_elems_per_sample_ = cfg.in_chans * cfg.img_size * cfg.img_size;
  classes_ = cfg.num_classes;
  comms_ = std::make_unique<Comms>();
  comms_->rank = pg.rank;
  comms_->world = pg.world_size;
  comms_->timeout_s = pg.timeout_s;
  comms_->start_watchdog();
  // Rank 0's unique id to everyone first: a missing process is named by the rendezvous before
  // anyone spends time building a replica.
  ncclUniqueId id{};
  if (pg.rank == 0) KAT_NCCL_CHECK(ncclGetUniqueId(&id));
  const std::vector<uint8_t> mine(reinterpret_cast<const uint8_t*>(&id),
                                  reinterpret_cast<const uint8_t*>(&id) + sizeof id);
  const std::vector<uint8_t> got = pg.share_from_rank0(mine);
  KAT_CHECK(got.size() == sizeof id, name_, ": the rendezvous handed over ", got.size(),
            " bytes, not an NCCL unique id of ", sizeof id);
  std::memcpy(&id, got.data(), sizeof id);
  replicas_.resize(1);
  pool_ = std::make_unique<ReplicaPool>(1);
  comms_->comms.assign(1, nullptr);
  pool_->run([&](int) {
    replicas_[0] = std::make_unique<GpuRunner>(cfg, device, DType::BF16, opt, local_batch);
    KAT_CUDA_CHECK(cudaSetDevice(device));
    KAT_WAIT_MARK("ncclCommInitRank");
    KAT_NCCL_CHECK(ncclCommInitRank(&comms_->comms[0], pg.world_size, id, pg.rank));
  });
  comms_->watched.store(comms_->comms[0]);
#endif
}

GpuGroup::~GpuGroup() = default;

void GpuGroup::each(const std::function<void(GpuRunner&, int)>& f) {
  pool_->run([&](int r) { f(*replicas_[size_t(r)], r); });
}

// Every call below may wait on the other processes of a job (a stream that holds an all-reduce):
// KAT_WAIT_MARK lets the watchdog time it. One process: no effect.
void GpuGroup::upload_params(const float* host) {
  KAT_WAIT_MARK("upload_params");
  each([&](GpuRunner& g, int) { g.upload_params(host); });
}
void GpuGroup::upload_moments(const float* m, const float* v, int64_t steps) {
  KAT_WAIT_MARK("upload_moments");
  each([&](GpuRunner& g, int) { g.upload_moments(m, v, steps); });
}
void GpuGroup::ema_init(const float* host, double decay) {
  KAT_WAIT_MARK("ema_init");
  each([&](GpuRunner& g, int) { g.ema_init(host, decay); });
}
void GpuGroup::download_params(float* host) {
  KAT_WAIT_MARK("download_params");
  primary().download_params(host);
}
void GpuGroup::download_moments(float* m, float* v) {
  KAT_WAIT_MARK("download_moments");
  primary().download_moments(m, v);
}
void GpuGroup::download_ema(float* host) {
  KAT_WAIT_MARK("download_ema");
  primary().download_ema(host);
}
void GpuGroup::use_ema_weights(bool on) {
  KAT_WAIT_MARK("use_ema_weights");
  primary().use_ema_weights(on);
}
const float* GpuGroup::logits(const float* images, int B) {
  KAT_WAIT_MARK("logits (evaluation)");
  return primary().logits(images, B);
}
const float* GpuGroup::logits_device(const float* d_images, int B) {
  KAT_WAIT_MARK("logits_device (evaluation)");
  return primary().logits_device(d_images, B);
}
void GpuGroup::begin_step() {
  KAT_WAIT_MARK("begin_step");
  each([](GpuRunner& g, int) { g.begin_step(); });
}

void GpuGroup::stage(const float* images, const float* targets, int B) {
  KAT_WAIT_MARK("stage");
  const int n = size();
  KAT_CHECK(B % n == 0, "batch of ", B, " images cannot be split evenly over ", n, " GPUs");
  const int shard = B / n;
  each([&](GpuRunner& g, int r) {
    g.stage(images + size_t(r) * shard * image_elems_per_sample_,
            targets ? targets + size_t(r) * shard * classes_ : nullptr, shard);
  });
}

void GpuGroup::stage_device(const float* d_images, const float* d_targets, int B) {
  KAT_CHECK(size() == 1 && world_ == 1, name_, ": a batch in device memory (--decode gpu) feeds one GPU of one ",
            "process; with several GPUs or processes use --decode cpu");
  primary().stage_device(d_images, d_targets, B);
}

void GpuGroup::compute_staged(int accum_steps, Rng* rng) {
  KAT_WAIT_MARK("compute_staged");
  const int n = size();
  // Replica r > 0 draws drop-path from its own Rng, seeded before any replica runs (they run at
  // once); replica 0 from the caller's, so that one GPU is exactly a GpuRunner. Several processes
  // (n = 1 each): rank R takes the Rng replica R of a one-process group of world_ GPUs would, so
  // both draw the same masks.
  const int replicas = n * world_, first = world_ > 1 ? comms_rank() : 0;
  std::vector<Rng> own;
  for (int r = 1; r < replicas; ++r) own.emplace_back(data::seed_hash({rng ? rng->next_u64() : 0u, uint64_t(r)}));
  each([&](GpuRunner& g, int r) {
    const int global = first + r;
    g.compute_staged(accum_steps * replicas, global == 0 ? rng : &own[size_t(global - 1)]);
  });
}

double GpuGroup::staged_loss() {
  KAT_WAIT_MARK("staged_loss");
  std::vector<double> loss(static_cast<size_t>(size()));
  each([&](GpuRunner& g, int r) { loss[size_t(r)] = g.staged_loss(); });
  double sum = 0;
  for (double l : loss) sum += l;           // in replica order: deterministic
  if (world_ > 1) all_reduce_sum(&sum, 1);  // the same value on every process
  return sum / (size() * world_);
}

void GpuGroup::finish_step(double lr, double clip_max_norm) {
  KAT_WAIT_MARK("finish_step");
  each([&](GpuRunner& g, int r) {
#ifdef KAT_HAVE_NCCL
    // Sum of the replicas' gradients, in place on each compute stream (after its backward, before
    // its optimizer step); one thread per communicator, as NCCL's one-thread-per-GPU model.
    if (size() > 1 || world_ > 1) {
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

void GpuGroup::enable_fp8() {
  KAT_CHECK(size() == 1 && world_ == 1, "--precision fp8 runs on one GPU in one process for now (", name_,
            "): each replica would keep its own amax history (they see different data); train on one GPU, "
            "or in bf16 on several");
  replicas_[0]->enable_fp8();
}

void GpuGroup::download_fp8_history(std::vector<float>& amax, std::vector<int64_t>& seen) {
  replicas_[0]->download_fp8_history(amax, seen);
}

void GpuGroup::upload_fp8_history(const std::vector<float>& amax, const std::vector<int64_t>& seen) {
  replicas_[0]->upload_fp8_history(amax, seen);
}

void GpuGroup::synchronize() {
  KAT_WAIT_MARK("synchronize");
  each([](GpuRunner& g, int) { g.synchronize(); });
}

void GpuGroup::all_reduce_sum(double* v, int n) {
  if (world_ == 1 || n <= 0) return;  // one process: the sum over processes is v itself
#ifdef KAT_HAVE_NCCL
  KAT_WAIT_MARK("all_reduce_sum");
  each([&](GpuRunner& g, int) {
    (void)g.device_grads();  // makes the replica's device current
    const auto stream = static_cast<cudaStream_t>(g.stream_handle());
    if (comms_->d_sums_n < size_t(n)) {
      if (comms_->d_sums) KAT_CUDA_CHECK(cudaFree(comms_->d_sums));
      comms_->d_sums = nullptr;
      KAT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&comms_->d_sums), size_t(n) * sizeof(double)));
      comms_->d_sums_n = size_t(n);
    }
    // On the compute stream: after everything enqueued before, like the gradients' all-reduce.
    KAT_CUDA_CHECK(cudaMemcpyAsync(comms_->d_sums, v, size_t(n) * sizeof(double), cudaMemcpyHostToDevice, stream));
    KAT_NCCL_CHECK(
        ncclAllReduce(comms_->d_sums, comms_->d_sums, size_t(n), ncclDouble, ncclSum, comms_->comms[0], stream));
    KAT_CUDA_CHECK(cudaMemcpyAsync(v, comms_->d_sums, size_t(n) * sizeof(double), cudaMemcpyDeviceToHost, stream));
    KAT_CUDA_CHECK(cudaStreamSynchronize(stream));
  });
#endif
}

std::size_t GpuGroup::device_bytes_in_use() {
  std::size_t sum = 0;
  for (auto& r : replicas_) sum += r->device_bytes_in_use();
  return sum;
}

int GpuGroup::comms_rank() const {
#ifdef KAT_HAVE_NCCL
  return comms_ ? comms_->rank : 0;
#else
  return 0;
#endif
}

}  // namespace kat
