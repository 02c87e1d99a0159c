#include "data/cuda/nvjpeg_decoder.h"

#include <cuda_runtime.h>
#include <nvjpeg.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

#include "data/cuda/ycbcr_to_rgb.h"
#include "kat/core/error.h"
#include "kat/data/image_io.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_memory.h"

namespace kat::data::cuda {

namespace {

const char* status_name(nvjpegStatus_t s) {
  switch (s) {
    case NVJPEG_STATUS_SUCCESS: return "success";
    case NVJPEG_STATUS_NOT_INITIALIZED: return "not initialized";
    case NVJPEG_STATUS_INVALID_PARAMETER: return "invalid parameter";
    case NVJPEG_STATUS_BAD_JPEG: return "bad JPEG";
    case NVJPEG_STATUS_JPEG_NOT_SUPPORTED: return "JPEG not supported";
    case NVJPEG_STATUS_ALLOCATOR_FAILURE: return "allocator failure";
    case NVJPEG_STATUS_EXECUTION_FAILED: return "execution failed";
    case NVJPEG_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case NVJPEG_STATUS_INTERNAL_ERROR: return "internal error";
    case NVJPEG_STATUS_IMPLEMENTATION_NOT_SUPPORTED: return "implementation not supported";
    case NVJPEG_STATUS_INCOMPLETE_BITSTREAM: return "incomplete bitstream";
  }
  return "unknown status";
}

// nvJPEG calls that must succeed (set-up): a failure is not the input's fault.
#define KAT_NVJPEG_CHECK(call)                                                                              \
  do {                                                                                                      \
    const nvjpegStatus_t kat_nvjpeg_s_ = (call);                                                            \
    if (kat_nvjpeg_s_ != NVJPEG_STATUS_SUCCESS)                                                             \
      throw std::runtime_error(std::string("nvJPEG: ") + #call + " failed: " + status_name(kat_nvjpeg_s_)); \
  } while (0)

// Move-only owner of an nvJPEG object, destroyed with Destroy.
template <class T, auto Destroy>
class Owned {
 public:
  Owned() = default;
  ~Owned() {
    if (h_) Destroy(h_);
  }
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  Owned(Owned&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  Owned& operator=(Owned&& o) noexcept {
    if (this != &o) {
      if (h_) Destroy(h_);
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  T get() const { return h_; }
  T* out() { return &h_; }  // for the create call (only on an empty owner)
  explicit operator bool() const { return h_ != nullptr; }

 private:
  T h_ = nullptr;
};
using Handle = Owned<nvjpegHandle_t, nvjpegDestroy>;
using State = Owned<nvjpegJpegState_t, nvjpegJpegStateDestroy>;
using JpegStream = Owned<nvjpegJpegStream_t, nvjpegJpegStreamDestroy>;
using Decoder = Owned<nvjpegJpegDecoder_t, nvjpegDecoderDestroy>;
using Params = Owned<nvjpegDecodeParams_t, nvjpegDecodeParamsDestroy>;
using PinnedBuf = Owned<nvjpegBufferPinned_t, nvjpegBufferPinnedDestroy>;
using DeviceBuf = Owned<nvjpegBufferDevice_t, nvjpegBufferDeviceDestroy>;

// nvJPEG's own buffers (its states' device and pinned memory), kept for reuse instead of returned.
// With the default allocators every buffer nvJPEG lets go is cudaFree'd / cudaFreeHost'd, and both
// wait for ALL work on the device: while a training step runs, each such call in a decode stalls
// until the step's queued kernels have run. Here device memory comes from a stream-ordered pool
// that never shrinks (cudaMallocFromPoolAsync / cudaFreeAsync: no device-wide wait), and pinned
// blocks go back to a free list, reused once the stream they were freed on has passed that point
// (an event). The counters say whether nvJPEG allocates per batch (DecodeStats::*_allocs).
// OPT-IN, NOT YET RUN ON A GPU: KAT_NVJPEG_ALLOCATOR=kept in the environment selects it; the default
// stays nvJPEG's own allocators until the A/B of bench/records/2026-12-07-s8-h100/README.md has run
// (the hypothesis: decoding a batch took 63 ms of GPU time while training against 34 ms alone).
class NvjpegMemory {
 public:
  explicit NvjpegMemory(int device) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    KAT_CUDA_CHECK(cudaMemPoolCreate(&pool_, &props));
    uint64_t keep = UINT64_MAX;  // never give memory back to the driver at a synchronisation
    KAT_CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &keep));
    dev_.dev_malloc = &dev_malloc;
    dev_.dev_free = &dev_free;
    dev_.dev_ctx = this;
    pin_.pinned_malloc = &pinned_malloc;
    pin_.pinned_free = &pinned_free;
    pin_.pinned_ctx = this;
  }
  ~NvjpegMemory() {  // after every nvJPEG object using it (NvjpegDecoder::Impl's first member)
    for (PinnedBlock& b : pinned_) {
      if (b.freed) {
        cudaEventSynchronize(b.freed);
        cudaEventDestroy(b.freed);
      }
      cudaFreeHost(b.ptr);
    }
    cudaDeviceSynchronize();  // the pool's last frees are stream-ordered
    cudaMemPoolDestroy(pool_);
  }
  NvjpegMemory(const NvjpegMemory&) = delete;
  NvjpegMemory& operator=(const NvjpegMemory&) = delete;

  nvjpegDevAllocatorV2_t* device() { return &dev_; }
  nvjpegPinnedAllocatorV2_t* pinned() { return &pin_; }
  int64_t device_allocs() const {
    std::lock_guard<std::mutex> g(mu_);
    return n_dev_;
  }
  int64_t pinned_allocs() const {
    std::lock_guard<std::mutex> g(mu_);
    return n_pinned_;
  }

 private:
  struct PinnedBlock {
    void* ptr = nullptr;
    size_t size = 0;
    bool in_use = false;
    cudaEvent_t freed = nullptr;  // recorded on the stream it was freed on
  };

  static int dev_malloc(void* ctx, void** ptr, size_t size, cudaStream_t stream) {
    auto* m = static_cast<NvjpegMemory*>(ctx);
    {
      std::lock_guard<std::mutex> g(m->mu_);
      ++m->n_dev_;
    }
    return cudaMallocFromPoolAsync(ptr, size, m->pool_, stream) == cudaSuccess ? 0 : 1;
  }
  static int dev_free(void*, void* ptr, size_t, cudaStream_t stream) {
    return cudaFreeAsync(ptr, stream) == cudaSuccess ? 0 : 1;
  }
  // The smallest free block that fits (and is no more than twice the size), else a new one.
  static int pinned_malloc(void* ctx, void** ptr, size_t size, cudaStream_t) {
    auto* m = static_cast<NvjpegMemory*>(ctx);
    std::lock_guard<std::mutex> g(m->mu_);
    ++m->n_pinned_;
    PinnedBlock* best = nullptr;
    for (PinnedBlock& b : m->pinned_)
      if (!b.in_use && b.size >= size && b.size / 2 <= size && (!best || b.size < best->size) &&
          (!b.freed || cudaEventQuery(b.freed) == cudaSuccess))
        best = &b;
    (void)cudaGetLastError();  // (a cudaErrorNotReady of the queries)
    if (!best) {
      PinnedBlock b;
      b.size = size;
      if (cudaHostAlloc(&b.ptr, size, cudaHostAllocDefault) != cudaSuccess) return 1;
      m->pinned_.push_back(b);
      best = &m->pinned_.back();
    }
    best->in_use = true;
    *ptr = best->ptr;
    return 0;
  }
  static int pinned_free(void* ctx, void* ptr, size_t, cudaStream_t stream) {
    auto* m = static_cast<NvjpegMemory*>(ctx);
    std::lock_guard<std::mutex> g(m->mu_);
    for (PinnedBlock& b : m->pinned_) {
      if (b.ptr != ptr) continue;
      if (!b.freed && cudaEventCreateWithFlags(&b.freed, cudaEventDisableTiming) != cudaSuccess) return 1;
      if (cudaEventRecord(b.freed, stream) != cudaSuccess) return 1;
      b.in_use = false;
      return 0;
    }
    return 1;  // not ours
  }

  cudaMemPool_t pool_ = nullptr;
  nvjpegDevAllocatorV2_t dev_{};
  nvjpegPinnedAllocatorV2_t pin_{};
  mutable std::mutex mu_;
  std::vector<PinnedBlock> pinned_;
  int64_t n_dev_ = 0, n_pinned_ = 0;
};

// True with KAT_NVJPEG_ALLOCATOR=kept (else nvJPEG's default cudaMalloc / cudaHostAlloc allocators).
bool use_kept_memory() {
  const char* e = std::getenv("KAT_NVJPEG_ALLOCATOR");
  return e && std::strcmp(e, "kept") == 0;
}

// What the hardware decoder writes. KAT_NVJPEG_OUTPUT=yuv (planar Y, Cb, Cr) or nv12 (Y and one
// interleaved CbCr plane; 4:2:0 files only, the others then take the CUDA-core path): the JPEG's
// component planes, which our kernel (data/cuda/ycbcr_to_rgb.h, libjpeg-turbo's upsampling and
// conversion bit for bit) turns into RGB, instead of nvJPEG's own conversion kernels, which the
// nvJPEG call waits for (session 9: ~60 ms per batch while a training step runs against ~30 ms
// alone). Default (unset): interleaved RGB from nvJPEG. Opt-in until measured.
enum class HwOutput { Rgbi, Yuv, Nv12 };
HwOutput hw_output_from_env() {
  const char* e = std::getenv("KAT_NVJPEG_OUTPUT");
  if (!e || !*e || std::strcmp(e, "rgb") == 0) return HwOutput::Rgbi;
  if (std::strcmp(e, "yuv") == 0) return HwOutput::Yuv;
  if (std::strcmp(e, "nv12") == 0) return HwOutput::Nv12;
  throw Error(detail::concat("KAT_NVJPEG_OUTPUT '", e, "': expected rgb, yuv or nv12"));
}
nvjpegOutputFormat_t nvjpeg_format(HwOutput o) {
  return o == HwOutput::Yuv ? NVJPEG_OUTPUT_YUV : o == HwOutput::Nv12 ? NVJPEG_OUTPUT_NV12 : NVJPEG_OUTPUT_RGBI;
}
const char* hw_output_note(HwOutput o) {
  return o == HwOutput::Yuv    ? ", planar output converted by kat"
         : o == HwOutput::Nv12 ? ", NV12 output converted by kat"
                               : "";
}

// (h, v) factors of the chroma planes that ycbcr.h converts; false for the others.
bool yuv_factors(nvjpegChromaSubsampling_t css, int& h, int& v) {
  switch (css) {
    case NVJPEG_CSS_444: h = 1, v = 1; return true;
    case NVJPEG_CSS_422: h = 2, v = 1; return true;
    case NVJPEG_CSS_420: h = 2, v = 2; return true;
    case NVJPEG_CSS_440: h = 1, v = 2; return true;
    default: return false;
  }
}

// False with KAT_NVJPEG_PREALLOCATE=0 (the hardware decoder then allocates as it goes).
bool use_preallocation() {
  const char* e = std::getenv("KAT_NVJPEG_PREALLOCATE");
  return !(e && std::strcmp(e, "0") == 0);
}

// A handle of `backend` with the most of these the library takes: strict bitstream checks (a
// corrupt stream is an error, not garbage) and chroma upsampling by interpolation (as libjpeg's
// default "fancy" upsampling) instead of replication. `flags` says which it got. Empty when the
// backend cannot start (no hardware decoder on this GPU). Its memory from `mem` (null: nvJPEG's
// default allocators).
Handle make_handle(nvjpegBackend_t backend, unsigned* flags, NvjpegMemory* mem) {
  const unsigned strict = NVJPEG_FLAGS_BITSTREAM_STRICT, interp = NVJPEG_FLAGS_UPSAMPLING_WITH_INTERPOLATION;
  for (const unsigned f : {strict | interp, strict, interp, 0u}) {
    Handle h;
    const nvjpegStatus_t st = mem ? nvjpegCreateExV2(backend, mem->device(), mem->pinned(), f, h.out())
                                  : nvjpegCreateEx(backend, nullptr, nullptr, f, h.out());
    if (st == NVJPEG_STATUS_SUCCESS) {
      *flags = f;
      return h;
    }
  }
  *flags = 0;
  return Handle();
}

std::string flag_names(unsigned f) {
  std::string s;
  if (f & NVJPEG_FLAGS_BITSTREAM_STRICT) s += ", strict";
  if (f & NVJPEG_FLAGS_UPSAMPLING_WITH_INTERPOLATION) s += ", interpolated upsampling";
  return s;
}

}  // namespace

bool needs_cpu_decode(const ImageHeader& h, const uint8_t* data, size_t size) {
  return h.format != ImageFormat::Jpeg || !h.jpeg.gpu_candidate() || !jpeg_tail_has_eoi(data, size);
}

bool cpu_decode(const uint8_t* data, size_t size, const std::string& name, int& h, int& w, int& c,
                std::vector<uint8_t>& out, std::string* err) {
  return decode_image_memory(data, size, name, h, w, c, out, err);
}

struct NvjpegDecoder::Impl {
  // The memory first: destroyed after everything nvJPEG holds; then the handles, destroyed after
  // every object made from them.
  std::unique_ptr<NvjpegMemory> mem;  // null: nvJPEG's default allocators (unless KAT_NVJPEG_ALLOCATOR=kept)
  Handle hw, sw;  // hardware backend (empty without a JPEG engine); default backend (decoupled API)
  unsigned hw_flags = 0, sw_flags = 0;  // what make_handle got
  int max_batch = 0;
  State hw_state;
  std::vector<JpegStream> hw_streams;  // one per image of a batch: the header, for the support check
  // KAT_NVJPEG_OUTPUT=yuv|nv12: the hardware decoder's planes, two areas in turn (the hardware
  // decoder may not wait for earlier work on the stream: an area is reused only after the
  // conversion that read it has run, host-synchronised on its event).
  HwOutput hw_output = HwOutput::Rgbi;
  bool yuv = false;  // hw_output is Yuv or Nv12: planes converted by our kernel
  kat::cuda::DeviceBuffer<uint8_t> yuv_area[2];
  kat::cuda::CudaEvent yuv_free[2];
  bool yuv_used[2] = {false, false};
  int yuv_next = 0;
  // Decoupled decoding, one image at a time: GPU_HYBRID (Huffman on the GPU) where it takes the
  // file, HYBRID (Huffman on the CPU; progressive files) otherwise.
  Decoder dec_gpu, dec_hybrid;
  State st_gpu, st_hybrid;
  Params params_rgb, params_gray;  // interleaved RGB for colour files, the Y plane for gray ones
  JpegStream sw_stream[2];         // in turn with the pinned buffers (the transfer may read the parsed stream)
  DeviceBuf device_buf;
  // Two pinned buffers in turn: image i + 1's host stage fills one while image i's copy to the
  // device still reads the other (the nvJPEG samples' pattern); an event says when a buffer is free.
  PinnedBuf pinned[2];
  kat::cuda::CudaEvent pinned_free[2];
  bool pinned_used[2] = {false, false};
  int next_pinned = 0;
  // CPU-decoded images go through this pinned staging area to the device.
  kat::cuda::PinnedBuffer<uint8_t> staging;
  kat::cuda::CudaEvent staging_free;
  bool staging_used = false;
  DecodeStats stats;

  int yuv_current = 0;  // the area plan_planes handed out last

  // KAT_NVJPEG_OUTPUT=yuv|nv12: where each hardware-decoded image's planes go (the next area, grown to
  // fit, after the conversion that last read it has run) and where its RGB goes. The plane sizes
  // are the JPEG's own (nvJPEG's component dimensions: ceil(width / h) x ceil(height / v)).
  std::vector<YcbcrJob> plan_planes(const EncodedImage* images, const std::vector<int>& list,
                                    uint8_t* const* dst) {
    const int k = yuv_next;
    yuv_next ^= 1;
    yuv_current = k;
    if (yuv_used[k]) yuv_free[k].synchronize();
    std::vector<YcbcrJob> jobs(list.size());
    std::vector<size_t> offset(list.size());
    size_t total = 0;
    const auto align = [](size_t x) { return (x + 255) / 256 * 256; };
    for (size_t j = 0; j < list.size(); ++j) {
      const EncodedImage& im = images[list[j]];
      nvjpegJpegStream_t s = hw_streams[j].get();
      nvjpegChromaSubsampling_t css = NVJPEG_CSS_UNKNOWN;
      KAT_NVJPEG_CHECK(nvjpegJpegStreamGetChromaSubsampling(s, &css));
      ycbcr::Planes& p = jobs[j].planes;
      KAT_CHECK(yuv_factors(css, p.h_factor, p.v_factor), "nvJPEG: unexpected chroma subsampling ", int(css));
      unsigned cw = 0, ch = 0;
      KAT_NVJPEG_CHECK(nvjpegJpegStreamGetComponentDimensions(s, 1, &cw, &ch));
      p.width = im.header.width;
      p.height = im.header.height;
      p.c_width = int(cw);
      p.c_height = int(ch);
      p.y_pitch = p.width;
      p.c_step = hw_output == HwOutput::Nv12 ? 2 : 1;
      p.c_pitch = p.c_width * p.c_step;
      offset[j] = total;
      // Y, then Cb and Cr (planar) or one CbCr plane of twice the width (NV12): the same bytes.
      total += align(size_t(p.width) * p.height) + 2 * align(size_t(p.c_width) * p.c_height);
      jobs[j].rgb = dst[list[j]];
    }
    if (yuv_area[k].size() < total) yuv_area[k].allocate(total + total / 4);
    for (size_t j = 0; j < list.size(); ++j) {
      ycbcr::Planes& p = jobs[j].planes;
      uint8_t* base = yuv_area[k].data() + offset[j];
      p.y = base;
      p.cb = base + align(size_t(p.width) * p.height);
      p.cr = p.c_step == 2 ? p.cb + 1 : p.cb + align(size_t(p.c_width) * p.c_height);
    }
    return jobs;
  }

  // One image through the decoupled API; false when nvJPEG rejects it (the CPU then tries).
  bool decode_one(const EncodedImage& im, uint8_t* dst, cudaStream_t stream) {
    // Buffers k (pinned buffer, parsed stream) are free once the last image that used them has
    // been copied to the device.
    const int k = next_pinned;
    if (pinned_used[k]) pinned_free[k].synchronize();
    next_pinned ^= 1;
    nvjpegJpegStream_t js = sw_stream[k].get();
    if (nvjpegJpegStreamParse(sw.get(), im.data, im.size, 0, 0, js) != NVJPEG_STATUS_SUCCESS) return false;
    const int c = im.header.channels;
    nvjpegDecodeParams_t params = c == 1 ? params_gray.get() : params_rgb.get();
    int unsupported = 1;
    const bool gpu =
        nvjpegDecoderJpegSupported(dec_gpu.get(), js, params, &unsupported) == NVJPEG_STATUS_SUCCESS &&
        unsupported == 0;
    nvjpegJpegDecoder_t dec = gpu ? dec_gpu.get() : dec_hybrid.get();
    nvjpegJpegState_t st = gpu ? st_gpu.get() : st_hybrid.get();
    if (nvjpegStateAttachPinnedBuffer(st, pinned[k].get()) != NVJPEG_STATUS_SUCCESS) return false;
    if (nvjpegDecodeJpegHost(sw.get(), dec, st, params, js) != NVJPEG_STATUS_SUCCESS) return false;
    if (nvjpegDecodeJpegTransferToDevice(sw.get(), dec, st, js, stream) != NVJPEG_STATUS_SUCCESS) return false;
    nvjpegImage_t out{};
    out.channel[0] = dst;
    out.pitch[0] = size_t(im.header.width) * c;
    const bool ok = nvjpegDecodeJpegDevice(sw.get(), dec, st, &out, stream) == NVJPEG_STATUS_SUCCESS;
    pinned_free[k].record(stream);
    pinned_used[k] = true;
    return ok;
  }
};

NvjpegDecoder::NvjpegDecoder(int max_batch) : impl_(std::make_unique<Impl>()) {
  KAT_CHECK(max_batch >= 1, "NvjpegDecoder: max_batch must be >= 1, got ", max_batch);
  Impl& I = *impl_;
  I.max_batch = max_batch;
  if (use_kept_memory()) {
    int device = 0;
    KAT_CUDA_CHECK(cudaGetDevice(&device));
    I.mem = std::make_unique<NvjpegMemory>(device);
  }
  I.sw = make_handle(NVJPEG_BACKEND_DEFAULT, &I.sw_flags, I.mem.get());
  KAT_CHECK(I.sw,
            "nvJPEG cannot start on this GPU (nvjpegCreateEx with the default backend failed); decode on "
            "the CPU with --decode cpu");
  I.hw = make_handle(NVJPEG_BACKEND_HARDWARE, &I.hw_flags, I.mem.get());
  if (I.hw) {
    I.hw_output = hw_output_from_env();
    I.yuv = I.hw_output != HwOutput::Rgbi;
    for (int k = 0; k < 2 && I.yuv; ++k) I.yuv_free[k] = kat::cuda::CudaEvent::create(cudaEventDisableTiming);
    KAT_NVJPEG_CHECK(nvjpegJpegStateCreate(I.hw.get(), I.hw_state.out()));
    // The hardware decoder's buffers for a whole batch, once, from a pool nvJPEG keeps (the size
    // hints only seed it). Without this each nvjpegDecodeBatched may allocate and free its own,
    // and a free waits for the whole device, i.e. for the training step running beside the loader.
    // nvImageCodec calls it always for the same reason; KAT_NVJPEG_PREALLOCATE=0 skips it (the A/B
    // of bench/train_from_files_ab.sh).
    if (use_preallocation())
      KAT_NVJPEG_CHECK(nvjpegDecodeBatchedPreAllocate(I.hw.get(), I.hw_state.get(), max_batch, 512, 512,
                                                      NVJPEG_CSS_420, nvjpeg_format(I.hw_output)));
    I.hw_streams.resize(size_t(max_batch));
    for (auto& s : I.hw_streams) KAT_NVJPEG_CHECK(nvjpegJpegStreamCreate(I.hw.get(), s.out()));
  }
  KAT_NVJPEG_CHECK(nvjpegDecoderCreate(I.sw.get(), NVJPEG_BACKEND_GPU_HYBRID, I.dec_gpu.out()));
  KAT_NVJPEG_CHECK(nvjpegDecoderCreate(I.sw.get(), NVJPEG_BACKEND_HYBRID, I.dec_hybrid.out()));
  KAT_NVJPEG_CHECK(nvjpegDecoderStateCreate(I.sw.get(), I.dec_gpu.get(), I.st_gpu.out()));
  KAT_NVJPEG_CHECK(nvjpegDecoderStateCreate(I.sw.get(), I.dec_hybrid.get(), I.st_hybrid.out()));
  KAT_NVJPEG_CHECK(nvjpegDecodeParamsCreate(I.sw.get(), I.params_rgb.out()));
  KAT_NVJPEG_CHECK(nvjpegDecodeParamsSetOutputFormat(I.params_rgb.get(), NVJPEG_OUTPUT_RGBI));
  KAT_NVJPEG_CHECK(nvjpegDecodeParamsCreate(I.sw.get(), I.params_gray.out()));
  KAT_NVJPEG_CHECK(nvjpegDecodeParamsSetOutputFormat(I.params_gray.get(), NVJPEG_OUTPUT_Y));
  for (auto& js : I.sw_stream) KAT_NVJPEG_CHECK(nvjpegJpegStreamCreate(I.sw.get(), js.out()));
  if (I.mem)
    KAT_NVJPEG_CHECK(nvjpegBufferDeviceCreateV2(I.sw.get(), I.mem->device(), I.device_buf.out()));
  else
    KAT_NVJPEG_CHECK(nvjpegBufferDeviceCreate(I.sw.get(), nullptr, I.device_buf.out()));
  KAT_NVJPEG_CHECK(nvjpegStateAttachDeviceBuffer(I.st_gpu.get(), I.device_buf.get()));
  KAT_NVJPEG_CHECK(nvjpegStateAttachDeviceBuffer(I.st_hybrid.get(), I.device_buf.get()));
  for (int k = 0; k < 2; ++k) {
    if (I.mem)
      KAT_NVJPEG_CHECK(nvjpegBufferPinnedCreateV2(I.sw.get(), I.mem->pinned(), I.pinned[k].out()));
    else
      KAT_NVJPEG_CHECK(nvjpegBufferPinnedCreate(I.sw.get(), nullptr, I.pinned[k].out()));
    I.pinned_free[k] = kat::cuda::CudaEvent::create(cudaEventDisableTiming);
  }
  I.staging_free = kat::cuda::CudaEvent::create(cudaEventDisableTiming);
}

NvjpegDecoder::~NvjpegDecoder() {
  // Work still enqueued may read the pinned buffers: let it finish before they go.
  if (!impl_) return;
  for (int k = 0; k < 2; ++k)
    if (impl_->pinned_used[k]) cudaEventSynchronize(impl_->pinned_free[k]);
  if (impl_->staging_used) cudaEventSynchronize(impl_->staging_free);
  for (int k = 0; k < 2; ++k)
    if (impl_->yuv_used[k]) cudaEventSynchronize(impl_->yuv_free[k]);
}

std::string NvjpegDecoder::backend() const {
  const Impl& I = *impl_;
  return (I.hw ? "hardware" + flag_names(I.hw_flags) + hw_output_note(I.hw_output) + "; " : std::string()) +
         "cuda" + flag_names(I.sw_flags);
}
DecodeStats NvjpegDecoder::stats() const {
  DecodeStats s = impl_->stats;
  s.device_allocs = impl_->mem ? impl_->mem->device_allocs() : -1;
  s.pinned_allocs = impl_->mem ? impl_->mem->pinned_allocs() : -1;
  return s;
}

void NvjpegDecoder::decode(const EncodedImage* images, int n, uint8_t* const* dst, cudaStream_t stream,
                           std::vector<char>& ok, std::vector<std::string>& errors) {
  Impl& I = *impl_;
  KAT_CHECK(n >= 0 && n <= I.max_batch, "NvjpegDecoder: batch of ", n, " images, planned for at most ",
            I.max_batch);
  ok.assign(size_t(n), 1);
  errors.assign(size_t(n), std::string());
  std::vector<int> hw_list, gpu_list, cpu_list, upload_list;
  for (int i = 0; i < n; ++i) {
    const EncodedImage& im = images[i];
    if (im.host_pixels) {
      upload_list.push_back(i);
    } else if (needs_cpu_decode(im.header, im.data, im.size)) {
      cpu_list.push_back(i);
    } else if (I.hw && im.header.channels == 3) {
      nvjpegJpegStream_t s = I.hw_streams[hw_list.size()].get();
      int unsupported = 1, fh = 0, fv = 0;
      nvjpegChromaSubsampling_t css = NVJPEG_CSS_UNKNOWN;
      if (nvjpegJpegStreamParseHeader(I.hw.get(), im.data, im.size, s) == NVJPEG_STATUS_SUCCESS &&
          nvjpegDecodeBatchedSupported(I.hw.get(), s, &unsupported) == NVJPEG_STATUS_SUCCESS && unsupported == 0 &&
          (!I.yuv || (nvjpegJpegStreamGetChromaSubsampling(s, &css) == NVJPEG_STATUS_SUCCESS &&
                      yuv_factors(css, fh, fv) && (I.hw_output != HwOutput::Nv12 || css == NVJPEG_CSS_420))))
        hw_list.push_back(i);
      else
        gpu_list.push_back(i);
    } else {
      gpu_list.push_back(i);
    }
  }
  // 1. The hardware decoder, one batched call. A failure of the call fails the whole batch without
  // saying which file: those images are decoded again one by one below, where each is judged alone.
  if (!hw_list.empty()) {
    const int m = int(hw_list.size());
    std::vector<const unsigned char*> data(static_cast<size_t>(m));
    std::vector<size_t> lengths(static_cast<size_t>(m));
    std::vector<nvjpegImage_t> out(static_cast<size_t>(m));
    std::vector<YcbcrJob> jobs;
    if (I.yuv) jobs = I.plan_planes(images, hw_list, dst);
    for (int j = 0; j < m; ++j) {
      const EncodedImage& im = images[hw_list[size_t(j)]];
      data[size_t(j)] = im.data;
      lengths[size_t(j)] = im.size;
      out[size_t(j)] = nvjpegImage_t{};
      if (I.yuv) {
        const ycbcr::Planes& p = jobs[size_t(j)].planes;
        out[size_t(j)].channel[0] = const_cast<uint8_t*>(p.y);
        out[size_t(j)].channel[1] = const_cast<uint8_t*>(p.cb);
        out[size_t(j)].pitch[0] = size_t(p.y_pitch);
        out[size_t(j)].pitch[1] = size_t(p.c_pitch);
        if (p.c_step == 1) {  // planar: Cr in a plane of its own (NV12: interleaved after Cb)
          out[size_t(j)].channel[2] = const_cast<uint8_t*>(p.cr);
          out[size_t(j)].pitch[2] = size_t(p.c_pitch);
        }
      } else {
        out[size_t(j)].channel[0] = dst[hw_list[size_t(j)]];
        out[size_t(j)].pitch[0] = size_t(im.header.width) * 3;
      }
    }
    const nvjpegOutputFormat_t format = nvjpeg_format(I.hw_output);
    const bool done =
        nvjpegDecodeBatchedInitialize(I.hw.get(), I.hw_state.get(), m, 1, format) == NVJPEG_STATUS_SUCCESS &&
        nvjpegDecodeBatched(I.hw.get(), I.hw_state.get(), data.data(), lengths.data(), out.data(), stream) ==
            NVJPEG_STATUS_SUCCESS;
    if (done) {
      I.stats.hardware += m;
      if (I.yuv) {
        ycbcr_to_rgb(jobs.data(), m, stream);
        I.yuv_free[I.yuv_current].record(stream);
        I.yuv_used[I.yuv_current] = true;
      }
    } else {
      gpu_list.insert(gpu_list.end(), hw_list.begin(), hw_list.end());
    }
  }
  // 2. nvJPEG on the CUDA cores, one image at a time.
  for (int i : gpu_list) {
    if (I.decode_one(images[i], dst[i], stream))
      ++I.stats.cuda;
    else
      cpu_list.push_back(i);
  }
  // 3. The CPU, then an upload through pinned staging (with the images given already decoded).
  std::vector<std::vector<uint8_t>> decoded(static_cast<size_t>(n));
  for (int i : cpu_list) {
    const EncodedImage& im = images[i];
    const std::string name = im.name ? *im.name : std::string("(image ") + std::to_string(i) + ")";
    int h = 0, w = 0, c = 0;
    std::string err;
    if (!cpu_decode(im.data, im.size, name, h, w, c, decoded[size_t(i)], &err)) {
      ok[size_t(i)] = 0;
      errors[size_t(i)] = err.empty() ? "file " + name + ": cannot decode" : err;
      ++I.stats.bad;
      continue;
    }
    if (h != im.header.height || w != im.header.width || c != im.header.channels) {  // e.g. a DNL height
      ok[size_t(i)] = 0;
      errors[size_t(i)] =
          detail::concat("file ", name, ": decodes to ", h, "x", w, "x", c, " but its header says ",
                         im.header.height, "x", im.header.width, "x", im.header.channels);
      ++I.stats.bad;
      continue;
    }
    upload_list.push_back(i);
  }
  size_t total = 0;
  for (int i : upload_list) {
    const EncodedImage& im = images[i];
    const size_t bytes = size_t(im.header.height) * im.header.width * im.header.channels;
    if (im.host_pixels && im.host_pixels_pinned) {  // already in pinned memory the caller keeps
      KAT_CUDA_CHECK(cudaMemcpyAsync(dst[i], im.host_pixels, bytes, cudaMemcpyHostToDevice, stream));
      ++I.stats.cpu;
    } else {
      total += bytes;
    }
  }
  if (total == 0) return;
  if (I.staging_used) I.staging_free.synchronize();  // the previous batch's uploads have left it
  if (I.staging.size() < total) I.staging.allocate(total + total / 2);
  size_t off = 0;
  for (int i : upload_list) {
    const EncodedImage& im = images[i];
    if (im.host_pixels && im.host_pixels_pinned) continue;  // sent above
    const size_t bytes = size_t(im.header.height) * im.header.width * im.header.channels;
    const uint8_t* src = im.host_pixels ? im.host_pixels : decoded[size_t(i)].data();
    std::memcpy(I.staging.data() + off, src, bytes);
    KAT_CUDA_CHECK(cudaMemcpyAsync(dst[i], I.staging.data() + off, bytes, cudaMemcpyHostToDevice, stream));
    off += bytes;
    ++I.stats.cpu;
  }
  I.staging_free.record(stream);
  I.staging_used = true;
}

}  // namespace kat::data::cuda
