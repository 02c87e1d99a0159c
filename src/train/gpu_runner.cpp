#include "kat/train/gpu_runner.h"

#include <algorithm>

#include "kat/core/bf16.h"
#include "kat/core/error.h"

#ifdef KAT_HAVE_CUDA
#include <cuda_runtime.h>
#include <omp.h>

#include <cstring>

#include "model/kat_model_cuda.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_memory.h"
#include "ops/cuda/embed.h"
#include "train/device_optimizer.h"
#endif

namespace kat {

#ifdef KAT_HAVE_CUDA

bool cuda_available(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    if (why) *why = e != cudaSuccess ? cudaGetErrorString(e) : "no GPU visible";
    cudaGetLastError();
    return false;
  }
  return true;
}

struct GpuRunner::Impl {
  // Declaration order is destruction order reversed: the streams outlive everything enqueued on
  // them (the destructor synchronises them first).
  int device = 0;
  cuda::CudaStream stream;  // compute
  cuda::CudaStream copy;    // input uploads
  std::unique_ptr<KatModelCuda> model;
  std::unique_ptr<DeviceOptimizer> opt;  // training runners only
  // Device input slots: (max_batch, C, H, W) images and (max_batch, K) fp32 targets; two when
  // training (one is filled while the other is computed on), one otherwise. Images are held in
  // the model's storage type: the bf16 model rounds its input to bf16 in the patch embedding
  // anyway, so the host converts while it copies into the pinned slot and half the bytes move
  // (bitwise the same columns; 154 -> 77 MB per kat_tiny batch of 256 at 224^2).
  int nslots = 1;
  DType image_dtype = DType::F32;
  cuda::DeviceBuffer<char> images[2];  // image_dtype values
  cuda::DeviceBuffer<float> targets[2];
  // Pinned host copies of the slots: pageable uploads run at ~5 GB/s on the H200 host (25 ms for a
  // 224^2 batch of 256), pinned ones at PCIe speed, asynchronously.
  cuda::PinnedBuffer<char> pinned_images[2];
  cuda::PinnedBuffer<float> pinned_targets[2];
  cuda::CudaEvent copied[2];    // copy stream: the slot's upload is done
  cuda::CudaEvent consumed[2];  // compute stream: the slot's last reader is done
  int slot_B[2] = {0, 0};
  int next_stage = 0, next_compute = 0, pending = 0;  // staged and not yet computed
  int last = -1;                                      // slot of the last computed batch
  size_t image_elems = 0, target_elems = 0;
  int max_batch = 0;
  double ema_decay = 0;
  std::string name;  // "cuda:N"
  std::size_t free_at_start = 0;
  std::vector<float> logits_host;  // (max_batch, K): logits()

  // dst (n values, fp32 or bf16 as st) = src (fp32), in parallel: a single thread moves ~10 GB/s.
  static void parallel_copy(void* dst, DType st, const float* src, size_t n) {
    constexpr size_t kChunk = size_t(1) << 20;  // values per task
    const int64_t chunks = int64_t((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static) \
    num_threads(std::max(1, std::min(8, omp_get_max_threads()))) if (chunks > 1)
    for (int64_t c = 0; c < chunks; ++c) {
      const size_t b = size_t(c) * kChunk, len = std::min(kChunk, n - b);
      if (st == DType::F32) {
        std::memcpy(static_cast<float*>(dst) + b, src + b, len * sizeof(float));
      } else {
        uint16_t* d = static_cast<uint16_t*>(dst) + b;
        const float* s = src + b;
#pragma omp simd
        for (size_t i = 0; i < len; ++i) d[i] = float_to_bf16(s[i]);
      }
    }
  }
  // Every public entry makes the runner's GPU current (several runners may share a thread).
  void use() const { KAT_CUDA_CHECK(cudaSetDevice(device)); }
  // Upload a batch into the next slot (copy stream; waits for the slot's previous reader).
  void stage(const float* host_images, const float* host_targets, int B) {
    KAT_CHECK(host_images, "GpuRunner::stage: images are null");
    KAT_CHECK(pending < nslots, "GpuRunner::stage: ", pending, " batch(es) already staged and not computed");
    const ModelConfig& c = model->config();
    const size_t ni = size_t(B) * c.in_chans * c.img_size * c.img_size, nt = size_t(B) * c.num_classes;
    KAT_CHECK(B > 0 && ni <= image_elems, "GpuRunner: batch ", B, " exceeds the planned maximum");
    const int s = next_stage;
    KAT_CUDA_CHECK(cudaStreamWaitEvent(copy, consumed[s], 0));
    // Once the slot's previous upload has left its pinned buffer, copy in parallel (a single
    // thread moves ~10 GB/s) and let the DMA run while the caller goes on.
    copied[s].synchronize();
    parallel_copy(pinned_images[s].data(), image_dtype, host_images, ni);
    KAT_CUDA_CHECK(cudaMemcpyAsync(images[s].data(), pinned_images[s].data(), ni * dtype_size(image_dtype),
                                   cudaMemcpyHostToDevice, copy));
    if (host_targets) {
      parallel_copy(pinned_targets[s].data(), DType::F32, host_targets, nt);
      KAT_CUDA_CHECK(cudaMemcpyAsync(targets[s].data(), pinned_targets[s].data(), nt * sizeof(float),
                                     cudaMemcpyHostToDevice, copy));
    }
    copied[s].record(copy);
    slot_B[s] = B;
    next_stage = (s + 1) % nslots;
    ++pending;
  }
  // stage() from device memory: fp32 images converted (or copied) into the next slot, targets
  // copied, on the copy stream; waits for the copy so the caller may reuse its buffers at once.
  void stage_device(const float* d_images, const float* d_targets, int B) {
    KAT_CHECK(d_images, "GpuRunner::stage_device: images are null");
    KAT_CHECK(pending < nslots, "GpuRunner::stage_device: ", pending,
              " batch(es) already staged and not computed");
    const ModelConfig& c = model->config();
    const size_t ni = size_t(B) * c.in_chans * c.img_size * c.img_size, nt = size_t(B) * c.num_classes;
    KAT_CHECK(B > 0 && ni <= image_elems, "GpuRunner: batch ", B, " exceeds the planned maximum");
    const int s = next_stage;
    KAT_CUDA_CHECK(cudaStreamWaitEvent(copy, consumed[s], 0));
    if (image_dtype == DType::F32)
      KAT_CUDA_CHECK(
          cudaMemcpyAsync(images[s].data(), d_images, ni * sizeof(float), cudaMemcpyDeviceToDevice, copy));
    else
      cuda::convert_f32_to_bf16(int64_t(ni), d_images, images[s].data(), copy);
    if (d_targets)
      KAT_CUDA_CHECK(
          cudaMemcpyAsync(targets[s].data(), d_targets, nt * sizeof(float), cudaMemcpyDeviceToDevice, copy));
    copied[s].record(copy);
    copied[s].synchronize();
    slot_B[s] = B;
    next_stage = (s + 1) % nslots;
    ++pending;
  }
  // The slot the next compute reads: the oldest staged batch (the compute stream waits for its
  // upload), or with nothing staged the last computed one again (`null images` reuse).
  int take(int B) {
    if (pending == 0) {
      KAT_CHECK(last >= 0, "GpuRunner: no batch on the device yet (the first call needs images)");
      KAT_CHECK(B == slot_B[last], "GpuRunner: batch ", B, " differs from the batch on the device (", slot_B[last],
                ")");
      return last;
    }
    const int s = next_compute;
    KAT_CUDA_CHECK(cudaStreamWaitEvent(stream, copied[s], 0));
    next_compute = (s + 1) % nslots;
    --pending;
    last = s;
    return s;
  }
  // The compute stream is done reading slot s once the work enqueued so far has run.
  void release(int s) { consumed[s].record(stream); }
  // Synchronous-API entry: nothing may be staged ahead of it.
  int take_now(const float* host_images, const float* host_targets, int B) {
    KAT_CHECK(pending == 0, "GpuRunner: a batch is staged; use compute_staged() for it first");
    if (host_images) {
      stage(host_images, host_targets, B);
    } else if (host_targets) {  // new targets for the batch already on the device
      KAT_CHECK(last >= 0, "GpuRunner: no batch on the device yet (the first call needs images)");
      const size_t nt = size_t(B) * model->config().num_classes;
      KAT_CUDA_CHECK(
          cudaMemcpyAsync(targets[last].data(), host_targets, nt * sizeof(float), cudaMemcpyHostToDevice, stream));
    }
    return take(B);
  }
  void compute_train(int s, int accum_steps, Rng* rng) {
    KAT_CHECK(accum_steps >= 1, "GpuRunner: accum_steps must be >= 1, got ", accum_steps);
    KatModelCuda& m = *model;
    m.forward(images[s].data(), image_dtype, slot_B[s], true, rng);
    m.loss_forward_backward(targets[s].data(), 0.0f);  // smoothing/mixing are already in the targets
    release(s);                                        // images and targets are read by now
    if (accum_steps > 1) m.divide_dlogits(float(accum_steps));
    m.backward(m.dlogits());
  }
  DeviceOptimizer& optimizer() {
    KAT_CHECK(opt != nullptr, "GpuRunner: this runner is for inference only (no optimizer)");
    return *opt;
  }
};

GpuRunner::GpuRunner(const ModelConfig& cfg, int device, DType dtype, const AdamWConfig& opt, int max_batch,
                     bool training)
    : impl_(std::make_unique<Impl>()) {
  std::string why;
  KAT_CHECK(cuda_available(&why), "--device cuda:", device, ": CUDA is not usable here (", why, ")");
  int n = 0;
  KAT_CUDA_CHECK(cudaGetDeviceCount(&n));
  KAT_CHECK(device < n, "--device cuda:", device, ": only ", n, " GPU(s) visible");
  KAT_CUDA_CHECK(cudaSetDevice(device));
  Impl& I = *impl_;
  I.device = device;
  I.name = "cuda:" + std::to_string(device);
  KAT_CUDA_CHECK(cudaFree(nullptr));  // create the context now, so it is not counted below
  std::size_t total = 0;
  KAT_CUDA_CHECK(cudaMemGetInfo(&I.free_at_start, &total));
  I.stream = cuda::CudaStream::create(cudaStreamNonBlocking);
  I.model = std::make_unique<KatModelCuda>(cfg, dtype, I.stream.get());
  // The optimizer state before the activation plan, so that the plan's memory check sees it.
  if (training) I.opt = std::make_unique<DeviceOptimizer>(*I.model, opt);
  I.model->plan(max_batch, training);
  I.max_batch = max_batch;
  I.image_elems = size_t(max_batch) * cfg.in_chans * cfg.img_size * cfg.img_size;
  I.target_elems = size_t(max_batch) * cfg.num_classes;
  I.logits_host.resize(I.target_elems);
  I.copy = cuda::CudaStream::create(cudaStreamNonBlocking);
  I.nslots = training ? 2 : 1;
  I.image_dtype = dtype;
  const size_t image_bytes = I.image_elems * dtype_size(I.image_dtype);
  for (int s = 0; s < I.nslots; ++s) {
    I.images[s].allocate(image_bytes);
    I.targets[s].allocate(I.target_elems);
    I.copied[s] = cuda::CudaEvent::create(cudaEventDisableTiming);
    I.consumed[s] = cuda::CudaEvent::create(cudaEventDisableTiming);
    I.pinned_images[s].allocate(image_bytes);
    I.pinned_targets[s].allocate(I.target_elems);
  }
}

GpuRunner::~GpuRunner() {
  if (!impl_) return;
  cudaSetDevice(impl_->device);
  if (impl_->stream) cudaStreamSynchronize(impl_->stream);
  if (impl_->copy) cudaStreamSynchronize(impl_->copy);
}

const ModelConfig& GpuRunner::config() const { return impl_->model->config(); }
std::string GpuRunner::device_name() const { return impl_->name; }
const char* GpuRunner::attention_name() const {
  return ops::attention_backend_name(impl_->model->attention_backend());
}

void GpuRunner::upload_params(const float* h) {
  impl_->use();
  KAT_CHECK(!impl_->opt || !impl_->opt->ema_swapped(),
            "GpuRunner::upload_params: the EMA weights are in use (use_ema_weights(false) first)");
  impl_->model->upload_params(h);
}
void GpuRunner::download_params(float* h) {
  impl_->use();
  if (impl_->opt)
    impl_->opt->download_params(h);  // the master weights, also while the EMA is swapped in
  else
    impl_->model->download_params(h);
}
void GpuRunner::download_moments(float* m, float* v) {
  impl_->use();
  impl_->optimizer().download_moments(m, v);
}
void GpuRunner::upload_moments(const float* m, const float* v, int64_t steps) {
  impl_->use();
  impl_->optimizer().upload_moments(m, v, steps);
}
int64_t GpuRunner::optimizer_steps() const { return impl_->opt ? impl_->opt->steps() : 0; }

void GpuRunner::enable_fp8() {
  impl_->use();
  int major = 0, minor = 0;
  KAT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, impl_->device));
  KAT_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, impl_->device));
  KAT_CHECK(major * 10 + minor >= 89, "--precision fp8 on ", impl_->name,
            ": FP8 tensor cores need a GPU of compute capability 8.9 or newer (Ada, Hopper, Blackwell); this one "
            "has ",
            major, ".", minor, " (train in bf16: --precision auto or bf16)");
  KAT_CHECK(impl_->model->dtype() == DType::BF16, "--precision fp8 on ", impl_->name,
            ": FP8 needs the bf16 runner (not --fp32)");
  impl_->model->enable_fp8();
}
bool GpuRunner::fp8_enabled() const { return impl_->model->fp8_enabled(); }
void GpuRunner::download_fp8_history(std::vector<float>& amax, std::vector<int64_t>& seen) {
  impl_->use();
  if (impl_->model->fp8_enabled())
    impl_->model->download_fp8_history(amax, seen);
  else
    Engine::download_fp8_history(amax, seen);
}
void GpuRunner::upload_fp8_history(const std::vector<float>& amax, const std::vector<int64_t>& seen) {
  impl_->use();
  if (impl_->model->fp8_enabled())
    impl_->model->upload_fp8_history(amax, seen);
  else
    Engine::upload_fp8_history(amax, seen);
}

void GpuRunner::synchronize() {
  impl_->use();
  KAT_CUDA_CHECK(cudaStreamSynchronize(impl_->stream));
}
std::size_t GpuRunner::device_bytes_in_use() const {
  impl_->use();
  std::size_t free = 0, total = 0;
  KAT_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  return impl_->free_at_start > free ? impl_->free_at_start - free : 0;
}

void GpuRunner::begin_step() {
  impl_->use();
  impl_->model->zero_grad();
}

double GpuRunner::accumulate(const float* images, const float* targets, int B, int accum_steps, Rng* rng) {
  impl_->use();
  impl_->compute_train(impl_->take_now(images, targets, B), accum_steps, rng);
  return impl_->model->loss_value();
}

void GpuRunner::stage(const float* images, const float* targets, int B) {
  impl_->use();
  impl_->stage(images, targets, B);
}

void GpuRunner::stage_device(const float* d_images, const float* d_targets, int B) {
  impl_->use();
  impl_->stage_device(d_images, d_targets, B);
}

void GpuRunner::compute_staged(int accum_steps, Rng* rng) {
  impl_->use();
  KAT_CHECK(impl_->pending > 0, "GpuRunner::compute_staged: nothing staged");
  impl_->compute_train(impl_->take(impl_->slot_B[impl_->next_compute]), accum_steps, rng);
}

double GpuRunner::staged_loss() {
  impl_->use();
  return impl_->model->loss_value();
}

void GpuRunner::finish_step(double lr, double clip_max_norm) {
  impl_->use();
  DeviceOptimizer& o = impl_->optimizer();
  if (clip_max_norm > 0) o.clip_grad_norm(clip_max_norm);
  o.step(lr);
  if (impl_->ema_decay > 0) o.ema_update(impl_->ema_decay);
}

double GpuRunner::train_step(const float* images, const float* targets, int B, double lr, Rng* rng) {
  impl_->use();
  begin_step();
  const double loss = accumulate(images, targets, B, 1, rng);
  finish_step(lr, 0.0);
  return loss;
}

double GpuRunner::last_grad_norm() {
  impl_->use();
  return impl_->optimizer().last_grad_norm();
}

void GpuRunner::ema_init(const float* host, double decay) {
  impl_->use();
  KAT_CHECK(decay > 0 && decay < 1, "GpuRunner: EMA decay must be in (0, 1), got ", decay);
  impl_->optimizer().ema_init(host);
  impl_->ema_decay = decay;
}
void GpuRunner::download_ema(float* host) {
  impl_->use();
  impl_->optimizer().download_ema(host);
}
void GpuRunner::use_ema_weights(bool on) {
  impl_->use();
  DeviceOptimizer& o = impl_->optimizer();
  if (o.ema_swapped() != on) o.swap_ema();
}

void GpuRunner::forward(const float* images, int B, float* logits, float* features) {
  impl_->use();
  const ModelConfig& c = impl_->model->config();
  const int max_b = impl_->max_batch;
  KAT_CHECK(B <= max_b || images, "GpuRunner::forward: batch ", B, " exceeds the planned ", max_b,
            " and so cannot reuse the batch on the device");
  // Larger batches (evaluation with --eval-batch above a training shard) run in chunks of the
  // planned maximum: no second, larger activation plan.
  for (int b0 = 0; b0 < B; b0 += max_b) {
    const int n = std::min(max_b, B - b0);
    const int s =
        impl_->take_now(images ? images + size_t(b0) * c.in_chans * c.img_size * c.img_size : nullptr, nullptr, n);
    impl_->model->forward(impl_->images[s].data(), impl_->image_dtype, n, false, nullptr);
    impl_->release(s);
    if (logits) impl_->model->download_logits(logits + size_t(b0) * c.num_classes);
    if (features) impl_->model->download_features(features + size_t(b0) * c.tokens() * c.embed_dim);
  }
}

const float* GpuRunner::logits(const float* images, int B) {
  impl_->use();
  if (impl_->logits_host.size() < size_t(B) * impl_->model->config().num_classes)
    impl_->logits_host.resize(size_t(B) * impl_->model->config().num_classes);
  forward(images, B, impl_->logits_host.data());
  return impl_->logits_host.data();
}

const float* GpuRunner::logits_device(const float* d_images, int B) {
  impl_->use();
  Impl& I = *impl_;
  const ModelConfig& c = I.model->config();
  KAT_CHECK(d_images && B > 0, "GpuRunner::logits_device: no images");
  KAT_CHECK(I.pending == 0, "GpuRunner: a batch is staged; use compute_staged() for it first");
  if (I.logits_host.size() < size_t(B) * c.num_classes) I.logits_host.resize(size_t(B) * c.num_classes);
  for (int b0 = 0; b0 < B; b0 += I.max_batch) {  // chunks of the plan, as forward()
    const int n = std::min(I.max_batch, B - b0);
    I.stage_device(d_images + size_t(b0) * c.in_chans * c.img_size * c.img_size, nullptr, n);
    const int s = I.take(n);
    I.model->forward(I.images[s].data(), I.image_dtype, n, false, nullptr);
    I.release(s);
    I.model->download_logits(I.logits_host.data() + size_t(b0) * c.num_classes);
  }
  return I.logits_host.data();
}

void GpuRunner::set_cuda_graphs(bool on) {
  impl_->use();
  impl_->model->set_cuda_graphs(on);
}
bool GpuRunner::cuda_graphs() const { return impl_->model->cuda_graphs(); }

int GpuRunner::device() const { return impl_->device; }
float* GpuRunner::device_grads() {
  impl_->use();
  return impl_->model->device_grads();
}
int64_t GpuRunner::device_grad_count() const { return impl_->model->device_total(); }
void* GpuRunner::stream_handle() { return impl_->stream.get(); }

#else  // no CUDA backend in this build

bool cuda_available(std::string* why) {
  if (why) *why = "this build has no CUDA backend (configure with -DKAT_CUDA=ON on a machine with nvcc)";
  return false;
}
struct GpuRunner::Impl {};
GpuRunner::GpuRunner(const ModelConfig&, int device, DType, const AdamWConfig&, int, bool) {
  std::string why;
  cuda_available(&why);
  throw Error(detail::concat("--device cuda:", device, ": ", why));
}
GpuRunner::~GpuRunner() = default;
const ModelConfig& GpuRunner::config() const { throw Error("no CUDA backend"); }
std::string GpuRunner::device_name() const { return ""; }
const char* GpuRunner::attention_name() const { return "ours"; }
int64_t GpuRunner::optimizer_steps() const { return 0; }
void GpuRunner::enable_fp8() {}
bool GpuRunner::fp8_enabled() const { return false; }
void GpuRunner::download_fp8_history(std::vector<float>& amax, std::vector<int64_t>& seen) {
  Engine::download_fp8_history(amax, seen);
}
void GpuRunner::upload_fp8_history(const std::vector<float>& amax, const std::vector<int64_t>& seen) {
  Engine::upload_fp8_history(amax, seen);
}
void GpuRunner::upload_params(const float*) {}
void GpuRunner::download_params(float*) {}
void GpuRunner::download_moments(float*, float*) {}
void GpuRunner::upload_moments(const float*, const float*, int64_t) {}
void GpuRunner::synchronize() {}
std::size_t GpuRunner::device_bytes_in_use() const { return 0; }
void GpuRunner::begin_step() {}
double GpuRunner::accumulate(const float*, const float*, int, int, Rng*) { return 0; }
void GpuRunner::stage(const float*, const float*, int) {}
void GpuRunner::stage_device(const float*, const float*, int) {}
void GpuRunner::compute_staged(int, Rng*) {}
double GpuRunner::staged_loss() { return 0; }
void GpuRunner::finish_step(double, double) {}
double GpuRunner::train_step(const float*, const float*, int, double, Rng*) { return 0; }
double GpuRunner::last_grad_norm() { return 0; }
void GpuRunner::ema_init(const float*, double) {}
void GpuRunner::download_ema(float*) {}
void GpuRunner::use_ema_weights(bool) {}
void GpuRunner::forward(const float*, int, float*, float*) {}
void GpuRunner::set_cuda_graphs(bool) {}
bool GpuRunner::cuda_graphs() const { return false; }
const float* GpuRunner::logits(const float*, int) { return nullptr; }
const float* GpuRunner::logits_device(const float*, int) { return nullptr; }
int GpuRunner::device() const { return -1; }
float* GpuRunner::device_grads() { return nullptr; }
int64_t GpuRunner::device_grad_count() const { return 0; }
void* GpuRunner::stream_handle() { return nullptr; }

#endif

}  // namespace kat
