#include "data/cuda/gpu_loader.h"

#include <cuda_runtime.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

#include "data/augment_plan.h"
#include "data/cuda/gpu_augment.h"
#include "kat/core/error.h"
#include "kat/train/gpu_runner.h"  // cuda_available
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_memory.h"

namespace kat::data::cuda {

namespace {

constexpr size_t kAlign = 256;  // offsets of files and decoded images: aligned for any access width
size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }
constexpr size_t kInitialFileBytes = 128 << 10;  // per sample, for the first pinned arena

// Seconds since t0, as nanoseconds for an atomic sum.
int64_t ns_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

struct GpuLoader::Impl {
  struct Sample {
    const uint8_t* data = nullptr;  // the file: in the slot's pinned arena, or in `spill`
    size_t size = 0;
    std::vector<uint8_t> spill;  // the file when the arena was full
    ImageHeader header;          // height x width x channels of the decoded image (also for CPU-decoded files)
    std::vector<uint8_t> cpu_pixels;  // decoded on the CPU when the pixel arena was full, else empty
    const uint8_t* pixels = nullptr;  // decoded on the CPU: in the slot's pixel arena or cpu_pixels
    bool pixels_pinned = false;       // pixels are in the (pinned) pixel arena
    SamplePlan plan;
    SampleTaps taps;  // the plan's resampling taps (GpuAugmenter::prepare_taps)
    int32_t label = 0;
    int64_t index = 0;
    std::string error;  // why the file cannot be used ("" when fine)
  };
  // The files of one batch being read (batch b lives in host slot b % host_slots).
  struct HostSlot {
    int64_t batch = -1;  // -1: free
    int n = 0, next_sample = 0, remaining = 0;
    std::vector<Sample> samples;
    kat::cuda::PinnedBuffer<uint8_t> arena;
    std::atomic<size_t> used{0}, need{0};  // bytes handed out / asked for (need > capacity: grow)
    // Images decoded on the CPU (HWC uint8), uploaded from here; grown like `arena` (empty until a
    // batch has CPU-decoded images).
    kat::cuda::PinnedBuffer<uint8_t> pixel_arena;
    std::atomic<size_t> pixel_used{0}, pixel_need{0};
    bool ready() const { return batch >= 0 && next_sample == n && remaining == 0; }
  };
  // One augmented batch on the device (batch b lives in out slot b % out_slots).
  struct OutSlot {
    int64_t batch = -1;  // -1: free
    bool ready = false;
    bool timed = false;  // begin -> done is one augmentation (not yet added to PipelineTimes)
    kat::cuda::DeviceBuffer<float> images, targets;
    kat::cuda::CudaEvent begin;  // on the loader's stream once the batch is decoded (timing)
    kat::cuda::CudaEvent done;   // the batch's decode and augmentation have run
    GpuBatch meta;
    std::exception_ptr err;
  };

  const Dataset& ds;
  const LoaderConfig cfg;
  GpuLoaderOptions opt;
  int64_t batches = 0;
  int out_c = 0, out_h = 0, out_w = 0;

  // The decoded images of one batch on the device, from its decode to its augmentation: batch b
  // uses arena b % arenas.size() (2 per decode thread, so a thread decodes batch b + 1 while
  // batch b waits for, or is in, its augmentation).
  struct DecodedArena {
    int64_t batch = -1;    // the batch decoded (or being decoded) into it; -1: free
    bool decoded = false;  // the decode call has returned: `ready` is recorded, the fields below set
    kat::cuda::DeviceBuffer<uint8_t> pixels;
    kat::cuda::CudaEvent begin;  // on the decoding thread's stream, before the decode (timing)
    kat::cuda::CudaEvent ready;  // on the decoding thread's stream: the images are on the device
    bool timed = false;          // begin -> ready of the last batch not yet added to PipelineTimes
    kat::cuda::CudaEvent read;   // on the loader's stream, after the augmentation: `pixels` may be reused
    bool read_pending = false;   // `read` is recorded: the next decode into `pixels` waits for it
    std::vector<int> keep;       // the samples of the host slot that were decoded, in order
    std::vector<uint8_t*> dst;   // where each went
    std::vector<char> ok;        // decoded (per keep entry)
    std::vector<std::string> errors;
    std::exception_ptr err;  // the decode failed as a whole (e.g. a file unreadable without --skip-bad)
  };

  // CUDA objects (destroyed after the threads are joined, in ~GpuLoader).
  kat::cuda::CudaStream stream;  // the augmentation; next()'s batches are ready on it
  // One per decode thread: its nvJPEG decoder and its stream.
  std::vector<std::unique_ptr<NvjpegDecoder>> decoders;
  std::vector<kat::cuda::CudaStream> decode_streams;
  std::vector<std::unique_ptr<DecodedArena>> arenas;
  std::vector<DecodeStats> decoder_stats;  // each decoder's counts after its last batch (under mu)
  std::unique_ptr<GpuAugmenter> augmenter;
  std::vector<std::unique_ptr<HostSlot>> host;
  std::vector<std::unique_ptr<OutSlot>> out;

  // Shared state, under mu.
  std::mutex mu;
  std::condition_variable cv;  // one condition for all: few waiters, rare changes
  bool stop = false, started = false;
  uint64_t gen = 0;
  int64_t epoch = 0;
  std::shared_ptr<const std::vector<int64_t>> order;
  int64_t fill_batch = 0;   // lowest batch with samples not yet claimed by a reader
  int64_t decode_next = 0;  // next batch a decode thread takes
  int64_t device_next = 0;  // next batch the augmenting thread builds
  int64_t deliver = 0;      // next batch next() returns
  int64_t held = -1;        // the batch the caller holds (returned by next())
  int readers_active = 0, decoders_active = 0;
  bool device_active = false;
  int64_t release_pending = -1;  // batch whose host slot is freed once its out slot's event has run
  std::exception_ptr fatal;      // a decode or the augmenting thread failed outside any batch
  uint64_t progress = 0;         // samples read + batches decoded + batches augmented (next()'s stall check)
  int64_t bad = 0;

  // PipelineTimes, in nanoseconds.
  std::atomic<int64_t> t_batches{0}, t_idle{0}, t_decode_idle{0}, t_decode{0}, t_augment{0}, t_wait_gpu{0},
      t_read{0}, t_cpu{0}, t_next{0};
  // GPU time (event to event, waiting for SMs included), in microseconds, and the batches timed.
  std::atomic<int64_t> g_decode_us{0}, g_decode_n{0}, g_augment_us{0}, g_augment_n{0};

  // Adds end - begin (both recorded on one stream) to `us` and counts it in `n` if the GPU has run
  // both; else (not finished yet) drops it: a statistic, never a wait.
  static void add_gpu_time(const kat::cuda::CudaEvent& begin, const kat::cuda::CudaEvent& end,
                           std::atomic<int64_t>& us, std::atomic<int64_t>& n) {
    float ms = 0.f;
    if (cudaEventElapsedTime(&ms, begin, end) == cudaSuccess) {
      us += int64_t(double(ms) * 1e3);
      ++n;
    } else {
      (void)cudaGetLastError();  // cudaErrorNotReady: not sticky, cleared
    }
  }

  std::vector<std::thread> threads;

  Impl(const Dataset& d, const LoaderConfig& c, const GpuLoaderOptions& o) : ds(d), cfg(c), opt(o) {}

  HostSlot& host_slot(int64_t b) { return *host[size_t(b % int64_t(host.size()))]; }
  OutSlot& out_slot(int64_t b) { return *out[size_t(b % int64_t(out.size()))]; }
  DecodedArena& arena(int64_t b) { return *arenas[size_t(b % int64_t(arenas.size()))]; }

  // What batch b waits for, for the stall error of next() (under mu).
  std::string describe_stall(int64_t b) {
    const HostSlot& hs = host_slot(b);
    const DecodedArena& a = arena(b);
    const OutSlot& os = out_slot(b);
    auto gpu_state = [](cudaEvent_t e) {
      const cudaError_t r = cudaEventQuery(e);
      if (r == cudaErrorNotReady) {
        (void)cudaGetLastError();
        return "not finished on the GPU";
      }
      return r == cudaSuccess ? "finished on the GPU" : "in error on the GPU";
    };
    std::string files = hs.batch == b ? detail::concat(hs.n - hs.remaining, " of ", hs.n, " files read")
                                      : std::string("its files not claimed yet (host slot busy with batch ") +
                                            std::to_string(hs.batch) + ")";
    std::string decode =
        a.batch == b ? (a.decoded ? detail::concat("decode call returned, ", gpu_state(a.ready))
                                  : std::string("in a decode call"))
                     : std::string("not being decoded (arena busy with batch ") + std::to_string(a.batch) + ")";
    std::string augment = os.batch == b ? (os.ready ? detail::concat("augmentation enqueued, ", gpu_state(os.done))
                                                    : std::string("being augmented"))
                                        : std::string("not augmented yet");
    return detail::concat("batch ", b, " of epoch ", epoch, ": ", files, "; ", decode, "; ", augment, " (",
                          readers_active, " readers, ", decoders_active, " decode calls, augmenting thread ",
                          device_active ? "busy" : "idle", ")");
  }

  // ---- readers ---------------------------------------------------------------------------------
  // The reader's claim: a free host slot is given the batch fill_batch; then its samples are claimed
  // one by one. Called under mu.
  bool can_claim() {
    if (!started || fill_batch >= batches) return false;
    HostSlot& hs = host_slot(fill_batch);
    if (hs.batch == fill_batch) return hs.next_sample < hs.n;
    return hs.batch == -1;
  }

  void read_file(const std::string& path, HostSlot& hs, Sample& s) {
    Fd f;
    f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    KAT_CHECK(f.fd >= 0, "file ", path, ": cannot open (", std::strerror(errno), ")");
    struct stat st;
    KAT_CHECK(::fstat(f.fd, &st) == 0 && S_ISREG(st.st_mode), "file ", path, ": not a regular file");
    KAT_CHECK(st.st_size > 0 && st.st_size <= (off_t(1) << 31), "file ", path, ": size ", st.st_size,
              " bytes (empty, or larger than 2 GiB)");
    const size_t size = size_t(st.st_size);
    hs.need.fetch_add(align_up(size));
    const size_t off = hs.used.fetch_add(align_up(size));
    uint8_t* dst = nullptr;
    if (off + size <= hs.arena.size()) {
      dst = hs.arena.data() + off;
    } else {  // the arena is full: pageable memory this time, a larger arena next time
      s.spill.resize(size);
      dst = s.spill.data();
    }
    size_t got = 0;
    while (got < size) {
      const ssize_t r = ::pread(f.fd, dst + got, size - got, off_t(got));
      if (r < 0 && errno == EINTR) continue;
      KAT_CHECK(r > 0, "file ", path, ": read failed after ", got, " of ", size, " bytes",
                r < 0 ? std::string(" (") + std::strerror(errno) + ")" : std::string(" (file shrank)"));
      got += size_t(r);
    }
    s.data = dst;
    s.size = size;
  }

  // Everything about sample i of a batch that the host does: read, header, CPU decode when needed,
  // the random decisions.
  void prepare(HostSlot& hs, Sample& s, int64_t ep) {
    const std::string& path = ds.files[size_t(s.index)];
    auto t0 = std::chrono::steady_clock::now();
    read_file(path, hs, s);
    s.header = parse_image_header(s.data, s.size, path);
    t_read += ns_since(t0);
    if (needs_cpu_decode(s.header, s.data, s.size) || s.header.height <= 0 ||
        cpu_decode_chosen(s.index, opt.cpu_decode_share)) {
      t0 = std::chrono::steady_clock::now();
      thread_local std::vector<uint8_t> pixels;  // the decode's output, copied to the pinned arena
      int h = 0, w = 0, c = 0;
      std::string err;
      KAT_CHECK(cpu_decode(s.data, s.size, path, h, w, c, pixels, &err),
                err.empty() ? "file " + path + ": cannot decode" : err);
      s.header.height = h;
      s.header.width = w;
      s.header.channels = c;
      const size_t bytes = size_t(h) * w * c;
      hs.pixel_need.fetch_add(align_up(bytes));
      const size_t off = hs.pixel_used.fetch_add(align_up(bytes));
      if (off + bytes <= hs.pixel_arena.size()) {
        std::memcpy(hs.pixel_arena.data() + off, pixels.data(), bytes);
        s.pixels = hs.pixel_arena.data() + off;
        s.pixels_pinned = true;
      } else {  // the arena is full: kept here this time (uploaded through staging), a larger arena next time
        s.cpu_pixels.assign(pixels.begin(), pixels.begin() + ptrdiff_t(bytes));
        s.pixels = s.cpu_pixels.data();
      }
      t_cpu += ns_since(t0);
    }
    // In the file's channels, as the CPU loader's decode: the augmenter converts to ds.channels.
    s.plan = plan_sample(cfg, ds, ep, s.index, s.header.height, s.header.width, s.header.channels);
    augmenter->prepare_taps(s.plan, s.taps);
  }

  void reader_loop() {
    lower_priority();
    std::unique_lock<std::mutex> lk(mu);
    for (;;) {
      cv.wait(lk, [&] { return stop || can_claim(); });
      if (stop) return;
      HostSlot& hs = host_slot(fill_batch);
      if (hs.batch != fill_batch) {  // a free slot: give it the batch
        const int64_t begin = fill_batch * cfg.batch_size;
        hs.batch = fill_batch;
        hs.n = int(std::min<int64_t>(cfg.batch_size, int64_t(ds.size()) - begin));
        hs.next_sample = 0;
        hs.remaining = hs.n;
        hs.samples.resize(size_t(hs.n));
        hs.used = 0;
        hs.need = 0;
        hs.pixel_used = 0;
        hs.pixel_need = 0;
        for (int i = 0; i < hs.n; ++i) {
          Sample& s = hs.samples[size_t(i)];
          s.index = (*order)[size_t(begin + i)];
          s.label = ds.labels[size_t(s.index)];
          s.spill.clear();
          s.cpu_pixels.clear();
          s.cpu_pixels.shrink_to_fit();  // (a spill is rare: do not keep its memory per sample)
          s.pixels = nullptr;
          s.pixels_pinned = false;
          s.error.clear();
        }
      }
      const int i = hs.next_sample++;
      if (hs.next_sample == hs.n) ++fill_batch;
      const uint64_t my_gen = gen;
      const int64_t ep = epoch;
      ++readers_active;
      lk.unlock();
      Sample& s = hs.samples[size_t(i)];
      try {
        KAT_CHECK(s.label >= 0 && s.label < ds.num_classes, ds.source, ": label ", s.label, " at index ", s.index,
                  " out of range [0, ", ds.num_classes, ")");
        prepare(hs, s, ep);
      } catch (const std::exception& e) {
        s.error = e.what();
      }
      lk.lock();
      --readers_active;
      if (my_gen == gen) --hs.remaining;
      ++progress;
      cv.notify_all();
    }
  }

  // This thread at opt.thread_nice (a failure only leaves it at the process's priority).
  void lower_priority() const {
    if (opt.thread_nice > 0) (void)setpriority(PRIO_PROCESS, id_t(syscall(SYS_gettid)), opt.thread_nice);
  }

  // A pipeline thread's start: its niceness, the loader's device current on it; false (the failure
  // left in `fatal` for next() to rethrow) when that fails.
  bool enter_device() {
    lower_priority();
    try {
      KAT_CUDA_CHECK(cudaSetDevice(opt.device));
      return true;
    } catch (...) {
      std::lock_guard<std::mutex> g(mu);
      fatal = std::current_exception();
      cv.notify_all();
      return false;
    }
  }

  // ---- decode threads ----------------------------------------------------------------------------
  // Batches are decoded in order of claim (decode_next), each by whichever decode thread is free, on
  // that thread's stream; a batch's files are ready and its arena is free. The nvJPEG call holds
  // its thread for the host's part of the decode (~60-80 us per image), which is why it has threads
  // of its own: the augmenting thread enqueues batch b while batch b + 1 is being decoded.
  bool decode_can_run() {
    if (!started || decode_next >= batches) return false;
    const HostSlot& hs = host_slot(decode_next);
    return hs.batch == decode_next && hs.ready() && arena(decode_next).batch == -1;
  }

  // Decode the readable files of batch b (host slot hs) into arena a, on decoder k's stream.
  void decode_batch(int k, int64_t ep, int64_t b, HostSlot& hs, DecodedArena& a) {
    a.keep.clear();
    for (int i = 0; i < hs.n; ++i) {
      const Sample& s = hs.samples[size_t(i)];
      if (s.error.empty()) {
        a.keep.push_back(i);
      } else if (opt.skip_bad) {
        std::lock_guard<std::mutex> g(mu);
        ++bad;
      } else {
        throw Error(s.error + " (batch " + std::to_string(b) + " of epoch " + std::to_string(ep) + ")");
      }
    }
    // Decoded images, back to back in the arena.
    const size_t m = a.keep.size();
    std::vector<size_t> offset(m);
    size_t total = 0;
    for (size_t j = 0; j < m; ++j) {
      const ImageHeader& h = hs.samples[size_t(a.keep[j])].header;
      offset[j] = total;
      total += align_up(size_t(h.height) * h.width * h.channels);
    }
    cudaStream_t dstream = decode_streams[size_t(k)];
    if (a.pixels.size() < total) {
      if (a.read_pending) a.read.synchronize();  // the augmentation that read the old buffer has run
      a.read_pending = false;
      a.pixels.allocate(total + total / 4);
    }
    if (a.read_pending) KAT_CUDA_CHECK(cudaStreamWaitEvent(dstream, a.read, 0));
    if (a.timed) add_gpu_time(a.begin, a.ready, g_decode_us, g_decode_n);  // the arena's previous batch
    a.timed = false;
    a.begin.record(dstream);
    std::vector<EncodedImage> enc(m);
    a.dst.resize(m);
    for (size_t j = 0; j < m; ++j) {
      const Sample& s = hs.samples[size_t(a.keep[j])];
      enc[j].data = s.data;
      enc[j].size = s.size;
      enc[j].name = &ds.files[size_t(s.index)];
      enc[j].header = s.header;
      enc[j].host_pixels = s.pixels;
      enc[j].host_pixels_pinned = s.pixels_pinned;
      a.dst[j] = a.pixels.data() + offset[j];
    }
    decoders[size_t(k)]->decode(enc.data(), int(m), a.dst.data(), dstream, a.ok, a.errors);
  }

  void decode_loop(int k) {
    if (!enter_device()) return;
    std::unique_lock<std::mutex> lk(mu);
    for (;;) {
      const auto t_wait = std::chrono::steady_clock::now();
      cv.wait(lk, [&] { return stop || decode_can_run(); });
      t_decode_idle += ns_since(t_wait);
      if (stop) return;
      const int64_t b = decode_next++, ep = epoch;
      const uint64_t my_gen = gen;
      HostSlot& hs = host_slot(b);
      DecodedArena& a = arena(b);
      a.batch = b;
      a.decoded = false;
      a.err = nullptr;
      ++decoders_active;
      lk.unlock();
      const auto t0 = std::chrono::steady_clock::now();
      try {
        decode_batch(k, ep, b, hs, a);
      } catch (...) {
        a.err = std::current_exception();
      }
      try {  // (also after a failure: what was enqueued must run before the arena and files are reused)
        a.ready.record(decode_streams[size_t(k)]);
        a.timed = !a.err;
      } catch (...) {
        if (!a.err) a.err = std::current_exception();
      }
      t_decode += ns_since(t0);
      lk.lock();
      --decoders_active;
      decoder_stats[size_t(k)] = decoders[size_t(k)]->stats();
      if (my_gen == gen) a.decoded = true;
      ++progress;
      cv.notify_all();
    }
  }

  // ---- augmenting thread ---------------------------------------------------------------------------
  bool device_can_run() {
    if (!started || device_next >= batches) return false;
    const DecodedArena& a = arena(device_next);
    return a.batch == device_next && a.decoded && out_slot(device_next).batch == -1;
  }

  // Augment batch b (decoded in arena a, files and plans in host slot hs) into out slot os, on the
  // loader's stream, after the decode.
  void augment_batch(int64_t ep, int64_t b, HostSlot& hs, DecodedArena& a, OutSlot& os) {
    KAT_CUDA_CHECK(cudaStreamWaitEvent(stream, a.ready, 0));
    if (a.err) std::rethrow_exception(a.err);
    os.begin.record(stream);
    os.timed = true;
    std::vector<DeviceImage> images;
    std::vector<SamplePlan> plans;
    std::vector<const SampleTaps*> taps_of;
    GpuBatch& m = os.meta;
    m.labels.clear();
    m.indices.clear();
    images.reserve(a.keep.size());
    plans.reserve(a.keep.size());
    taps_of.reserve(a.keep.size());
    for (size_t j = 0; j < a.keep.size(); ++j) {
      const Sample& s = hs.samples[size_t(a.keep[j])];
      if (!a.ok[j]) {
        KAT_CHECK(opt.skip_bad, a.errors[j], " (batch ", b, " of epoch ", ep, ")");
        std::lock_guard<std::mutex> g(mu);
        ++bad;
        continue;
      }
      DeviceImage im;
      im.pixels = a.dst[j];
      im.h = s.header.height;
      im.w = s.header.width;
      im.c = s.header.channels;
      im.row_bytes = int64_t(s.header.width) * s.header.channels;
      images.push_back(im);
      plans.push_back(s.plan);
      taps_of.push_back(&s.taps);
      m.labels.push_back(s.label);
      m.indices.push_back(s.index);
    }
    const int n = int(images.size());
    KAT_CHECK(n > 0, ds.source, ": every file of batch ", b, " of epoch ", ep, " is unreadable (--skip-bad)");
    m.mix = augmenter->run(images.data(), plans.data(), m.labels.data(), n, ep, b, os.images.data(),
                           os.targets.data(), stream, taps_of.data());
    m.n = n;
    m.c = out_c;
    m.h = out_h;
    m.w = out_w;
    m.classes = ds.num_classes;
    m.images = os.images.data();
    m.targets = os.targets.data();
    m.epoch = ep;
    m.batch = b;
  }

  // Wait for everything the loader enqueued.
  void sync_all() {
    KAT_CUDA_CHECK(cudaStreamSynchronize(stream));
    for (auto& s : decode_streams) KAT_CUDA_CHECK(cudaStreamSynchronize(s));
  }

  // Frees the host slot of batch b once the GPU is past its batch (its files may be read by
  // nvJPEG's copies until then: the out slot's event follows the decode), growing its pinned arenas
  // when the batch did not fit. Called without mu by the augmenting thread.
  void release_host(int64_t b) {
    const auto t0 = std::chrono::steady_clock::now();
    OutSlot& os = out_slot(b);
    os.done.synchronize();
    t_wait_gpu += ns_since(t0);
    if (os.timed) add_gpu_time(os.begin, os.done, g_augment_us, g_augment_n);
    os.timed = false;
    HostSlot& hs = host_slot(b);
    const size_t need = hs.need.load();
    if (need > hs.arena.size()) hs.arena.allocate(need + need / 4);
    const size_t pixel_need = hs.pixel_need.load();
    if (pixel_need > hs.pixel_arena.size()) hs.pixel_arena.allocate(pixel_need + pixel_need / 4);
    std::lock_guard<std::mutex> g(mu);
    if (hs.batch == b) hs.batch = -1;
    cv.notify_all();
  }

  void device_loop() {
    if (!enter_device()) return;
    std::unique_lock<std::mutex> lk(mu);
    for (;;) {
      const auto t_wait = std::chrono::steady_clock::now();
      cv.wait(lk, [&] { return stop || device_can_run(); });
      t_idle += ns_since(t_wait);
      if (stop) return;
      const int64_t b = device_next, ep = epoch;
      const uint64_t my_gen = gen;
      HostSlot& hs = host_slot(b);
      DecodedArena& a = arena(b);
      OutSlot& os = out_slot(b);
      os.batch = b;
      os.ready = false;
      os.timed = false;
      os.err = nullptr;
      const int64_t previous = release_pending;
      device_active = true;
      lk.unlock();
      const auto t0 = std::chrono::steady_clock::now();
      try {
        augment_batch(ep, b, hs, a, os);
      } catch (...) {
        os.err = std::current_exception();
      }
      // The arena is free for the next decode once this augmentation has read it; the batch is
      // ready once its decode and augmentation have run (also after a failure: what was enqueued
      // must run before the arena, the files and the output are reused).
      std::exception_ptr record_err;
      try {
        a.read.record(stream);
        os.done.record(stream);
      } catch (...) {
        record_err = std::current_exception();
      }
      t_augment += ns_since(t0);
      std::exception_ptr release_err;
      try {
        if (previous >= 0) release_host(previous);
      } catch (...) {
        release_err = std::current_exception();
      }
      lk.lock();
      device_active = false;
      if (record_err && !fatal) fatal = record_err;
      if (release_err && !fatal) fatal = release_err;
      ++t_batches;
      ++progress;
      if (my_gen == gen) {
        a.read_pending = true;
        a.batch = -1;
        a.decoded = false;
        os.ready = true;
        ++device_next;
        release_pending = b;
      }
      cv.notify_all();
    }
  }
};

GpuLoader::GpuLoader(const Dataset& ds, LoaderConfig cfg, GpuLoaderOptions opt) : ds_(ds), cfg_(std::move(cfg)) {
  const std::string who = "GPU loader for " + (ds.source.empty() ? std::string("dataset") : ds.source);
  std::string why;
  KAT_CHECK(cuda_available(&why), who, ": CUDA is not usable here (", why, ")");
  KAT_CHECK(ds.lazy() && ds.files.size() == ds.size() && ds.size() > 0, who,
            ": needs a lazy folder dataset (files decoded when read: --lazy-data / a folder: dataset)");
  KAT_CHECK(ds.channels == 1 || ds.channels == 3, who, ": channels must be 1 or 3, got ", ds.channels);
  KAT_CHECK(cfg_.batch_size >= 1, who, ": batch_size must be >= 1, got ", cfg_.batch_size);
  KAT_CHECK(opt.decode_streams >= 1 && opt.decode_streams <= kMaxDecodeStreams, who,
            ": decode_streams must be in [1, ", kMaxDecodeStreams, "], got ", opt.decode_streams);
  // Default: a slot per batch being read, decoded (one per decode thread), augmented and released.
  if (opt.host_slots == 0) opt.host_slots = 2 + 2 * opt.decode_streams;
  KAT_CHECK(opt.host_slots >= 2 && opt.out_slots >= 2, who, ": host_slots and out_slots must be >= 2");
  KAT_CHECK(opt.read_threads >= 0 && opt.read_threads <= 256, who, ": read_threads must be in [0, 256]");
  KAT_CHECK(opt.thread_nice >= 0 && opt.thread_nice <= 19, who, ": thread_nice must be in [0, 19], got ",
            opt.thread_nice);
  KAT_CHECK(opt.cpu_decode_share >= 0.0 && opt.cpu_decode_share <= 1.0, who,
            ": cpu_decode_share must be in [0, 1], got ", opt.cpu_decode_share);
  validate(cfg_.aug, ds.height, ds.width, ds.channels);
  const int64_t N = int64_t(ds.size()), B = cfg_.batch_size;
  batches_per_epoch_ = cfg_.drop_last ? N / B : (N + B - 1) / B;
  KAT_CHECK(batches_per_epoch_ > 0, who, ": ", N, " samples is fewer than one batch of ", B, " with drop_last");
  if (opt.read_threads == 0) opt.read_threads = std::clamp(int(std::thread::hardware_concurrency()) - 1, 1, 32);

  impl_ = std::make_unique<Impl>(ds_, cfg_, opt);
  Impl& I = *impl_;
  I.batches = batches_per_epoch_;
  I.out_c = out_channels();
  I.out_h = out_height();
  I.out_w = out_width();
  KAT_CUDA_CHECK(cudaSetDevice(opt.device));
  auto make_stream = [&] {
    return opt.high_priority ? kat::cuda::CudaStream::create_high_priority() : kat::cuda::CudaStream::create();
  };
  I.stream = make_stream();
  for (int k = 0; k < opt.decode_streams; ++k) {
    I.decoders.push_back(std::make_unique<NvjpegDecoder>(cfg_.batch_size));
    I.decode_streams.push_back(make_stream());
    // Batches go to whichever decoder is free: they must decode alike (a second hardware handle
    // refused would send some batches to the CUDA cores, whose pixels round differently).
    KAT_CHECK(I.decoders[size_t(k)]->backend() == I.decoders[0]->backend(), who, ": nvJPEG decoder ", k,
              " started as '", I.decoders[size_t(k)]->backend(), "', decoder 0 as '", I.decoders[0]->backend(),
              "'; use one decode stream (--decode-streams 1)");
  }
  I.decoder_stats.resize(size_t(opt.decode_streams));
  for (int k = 0; k < 2 * opt.decode_streams; ++k) {
    auto a = std::make_unique<Impl::DecodedArena>();
    a->begin = kat::cuda::CudaEvent::create();  // timing: PipelineTimes::gpu_decode
    a->ready = kat::cuda::CudaEvent::create();
    a->read = kat::cuda::CudaEvent::create(cudaEventDisableTiming);
    I.arenas.push_back(std::move(a));
  }
  I.augmenter = std::make_unique<GpuAugmenter>(cfg_, I.out_c, I.out_h, I.out_w, ds.num_classes, cfg_.batch_size);
  for (int s = 0; s < opt.host_slots; ++s) {
    I.host.push_back(std::make_unique<Impl::HostSlot>());
    I.host.back()->arena.allocate(size_t(B) * kInitialFileBytes);
  }
  for (int s = 0; s < opt.out_slots; ++s) {
    auto o = std::make_unique<Impl::OutSlot>();
    o->images.allocate(size_t(B) * I.out_c * I.out_h * I.out_w);
    o->targets.allocate(size_t(B) * ds.num_classes);
    o->begin = kat::cuda::CudaEvent::create();  // timing: PipelineTimes::gpu_augment
    o->done = kat::cuda::CudaEvent::create();
    I.out.push_back(std::move(o));
  }
  I.threads.emplace_back([&I] { I.device_loop(); });
  for (int k = 0; k < opt.decode_streams; ++k) I.threads.emplace_back([&I, k] { I.decode_loop(k); });
  for (int t = 0; t < opt.read_threads; ++t) I.threads.emplace_back([&I] { I.reader_loop(); });
}

GpuLoader::~GpuLoader() {
  if (!impl_) return;
  {
    std::lock_guard<std::mutex> g(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  for (auto& t : impl_->threads)
    if (t.joinable()) t.join();
  // Nothing enqueued may outlive its buffers.
  if (impl_->stream) cudaStreamSynchronize(impl_->stream);
  for (auto& s : impl_->decode_streams)
    if (s) cudaStreamSynchronize(s);
}

void GpuLoader::start_epoch(int64_t epoch, int64_t first_batch) {
  KAT_CHECK(epoch >= 0, "GPU loader: epoch must be >= 0, got ", epoch);
  KAT_CHECK(first_batch >= 0 && first_batch <= batches_per_epoch_, "GPU loader: first batch ", first_batch,
            " out of range [0, ", batches_per_epoch_, "]");
  Impl& I = *impl_;
  auto order =
      std::make_shared<const std::vector<int64_t>>(epoch_order(ds_.size(), cfg_.seed, epoch, cfg_.shuffle));
  std::unique_lock<std::mutex> lk(I.mu);
  // Stop handing out work, let what runs finish (it is dropped), then wait for the GPU to leave the
  // buffers before anything is reused.
  ++I.gen;
  I.started = false;
  I.cv.wait(lk, [&] { return I.readers_active == 0 && I.decoders_active == 0 && !I.device_active; });
  I.sync_all();
  for (auto& h : I.host) h->batch = -1;
  for (auto& a : I.arenas) {
    a->batch = -1;
    a->decoded = false;
    a->read_pending = false;  // (the streams are idle)
    a->err = nullptr;
  }
  for (auto& o : I.out) {
    o->batch = -1;
    o->ready = false;
    o->err = nullptr;
  }
  I.order = std::move(order);
  I.epoch = epoch_ = epoch;
  I.fill_batch = I.decode_next = I.device_next = I.deliver = next_deliver_ = first_batch;
  I.held = -1;
  I.release_pending = -1;
  I.started = true;
  lk.unlock();
  I.cv.notify_all();
}

bool GpuLoader::next(GpuBatch& out) {
  Impl& I = *impl_;
  std::unique_lock<std::mutex> lk(I.mu);
  KAT_CHECK(I.started, "GPU loader: next() called before start_epoch()");
  if (I.held >= 0) {  // the caller is done with the batch it holds
    I.out_slot(I.held).batch = -1;
    I.held = -1;
    I.cv.notify_all();
  }
  if (I.deliver >= I.batches) return false;
  const int64_t b = I.deliver;
  Impl::OutSlot& os = I.out_slot(b);
  const auto t0 = std::chrono::steady_clock::now();
  const double timeout = I.opt.stall_timeout_s;
  auto stalled = [&](const std::string& what) {
    const std::string msg =
        detail::concat("GPU loader: no progress in ", timeout, " s waiting for ", what,
                       ". A pipeline stage or the GPU is stuck; the run stops here "
                       "(resume it from its last checkpoint; --decode cpu avoids the GPU loader)");
    std::fprintf(stderr, "kat: %s\n", msg.c_str());  // (tearing down a stuck pipeline may not return)
    return Error(msg);
  };
  {
    uint64_t seen = I.progress;
    auto last = std::chrono::steady_clock::now();
    while (!(I.fatal || (os.batch == b && os.ready))) {
      if (timeout <= 0) {
        I.cv.wait(lk);
        continue;
      }
      I.cv.wait_for(lk, std::chrono::milliseconds(500));
      const auto now = std::chrono::steady_clock::now();
      if (I.progress != seen) {
        seen = I.progress;
        last = now;
      } else if (std::chrono::duration<double>(now - last).count() > timeout) {
        throw stalled(I.describe_stall(b));
      }
    }
  }
  I.t_next += ns_since(t0);
  if (I.fatal) std::rethrow_exception(I.fatal);
  ++I.deliver;
  next_deliver_ = I.deliver;
  I.held = b;
  std::exception_ptr err = os.err;
  lk.unlock();
  if (err) std::rethrow_exception(err);
  const auto t1 = std::chrono::steady_clock::now();
  if (timeout <= 0) {
    os.done.synchronize();
  } else {  // poll (CUDA has no timed event wait): the batch is normally done already
    int sleep_us = 10;
    for (;;) {
      const cudaError_t r = cudaEventQuery(os.done);
      if (r == cudaSuccess) break;
      KAT_CHECK(r == cudaErrorNotReady, "GPU loader: batch ", b, ": ", cudaGetErrorString(r));
      (void)cudaGetLastError();
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count() > timeout)
        throw stalled(detail::concat("the GPU to finish batch ", b, "'s decode and augmentation"));
      std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
      sleep_us = std::min(sleep_us * 2, 1000);
    }
  }
  I.t_next += ns_since(t1);
  out = os.meta;
  return true;
}

PipelineTimes GpuLoader::times() const {
  const Impl& I = *impl_;
  auto s = [](const std::atomic<int64_t>& ns) { return double(ns.load()) * 1e-9; };
  PipelineTimes t;
  t.batches = I.t_batches.load();
  t.device_idle = s(I.t_idle);
  t.decode_idle = s(I.t_decode_idle);
  t.device_decode = s(I.t_decode);
  t.device_augment = s(I.t_augment);
  t.device_wait_gpu = s(I.t_wait_gpu);
  t.read = s(I.t_read);
  t.cpu_decode = s(I.t_cpu);
  t.next_wait = s(I.t_next);
  auto per_batch = [](const std::atomic<int64_t>& us, const std::atomic<int64_t>& n) {
    const int64_t k = n.load();
    return k > 0 ? double(us.load()) * 1e-6 / double(k) : 0.0;
  };
  t.gpu_decode = per_batch(I.g_decode_us, I.g_decode_n);
  t.gpu_augment = per_batch(I.g_augment_us, I.g_augment_n);
  return t;
}

bool cpu_decode_chosen(int64_t index, double share) {
  if (share <= 0.0) return false;
  if (share >= 1.0) return true;
  const uint64_t h = seed_hash({seed_tag("cpu-decode"), uint64_t(index)});
  return double(h >> 11) * 0x1.0p-53 < share;  // the top 53 bits: a uniform fraction in [0, 1)
}

DecodeStats GpuLoader::decode_stats() const {
  std::lock_guard<std::mutex> g(impl_->mu);
  DecodeStats sum;
  for (const DecodeStats& st : impl_->decoder_stats) {
    sum.hardware += st.hardware;
    sum.cuda += st.cuda;
    sum.cpu += st.cpu;
    sum.bad += st.bad;
    sum.device_allocs = st.device_allocs < 0 ? -1 : sum.device_allocs + st.device_allocs;
    sum.pinned_allocs = st.pinned_allocs < 0 ? -1 : sum.pinned_allocs + st.pinned_allocs;
  }
  return sum;
}
std::string GpuLoader::decode_backend() const { return impl_->decoders.front()->backend(); }
int GpuLoader::decode_threads() const { return int(impl_->decoders.size()); }
int64_t GpuLoader::bad_files() const {
  std::lock_guard<std::mutex> g(impl_->mu);
  return impl_->bad;
}

}  // namespace kat::data::cuda
