// The GPU data pipeline of a lazy folder dataset (issue #11): files read by a thread pool, decoded by
// nvJPEG (data/cuda/nvjpeg_decoder.h), augmented by GpuAugmenter (data/cuda/gpu_augment.h), handed
// out as device pointers. Same batches as data::Loader decides them (kat/data/loader.h): batch b of
// epoch e holds epoch_order(...)[b*B, (b+1)*B), every sample's random decisions come from
// plan_sample() on the sample's own stream, mixing from the batch's "mix" stream; so the output is a
// pure function of (seed, epoch, batch) whatever the thread count or timing, and
// start_epoch(e, first_batch) resumes bit-exactly.
//
// Pipeline and memory (bounded whatever the dataset size):
//   readers (read_threads)  claim samples of the next `host_slots` batches, read each file into the
//                           batch's pinned arena, parse its header (data/jpeg_header.h), draw its
//                           plan and its resampling taps; files nvJPEG will not take (PNG, CMYK, ...)
//                           are decoded here on the CPU, and so is a fixed share of the others
//                           (cpu_decode_share: the reader threads' libjpeg-turbo runs beside the
//                           hardware JPEG engine), into the slot's pinned pixel arena.
//   decode threads          (decode_streams of them, each with its nvJPEG decoder and CUDA stream)
//                           take batches in order, whichever is free: nvJPEG decode (and the upload
//                           of the CPU-decoded images) into a device arena (2 per decode thread), an
//                           event.
//   augmenting thread       in batch order: waits (on the GPU) for the batch's decode, then
//                           GpuAugmenter::run into one of `out_slots` output slots on the loader's
//                           stream, an event. Decode and augmentation have host threads of their
//                           own because each call holds its thread for milliseconds of host work
//                           (nvJPEG's part of a batched decode, the augmentation's job tables):
//                           batch b is augmented while b + 1 is decoded and b + 2 read, all while
//                           the caller trains on batch b - 1.
//   next()                  waits for the batch's event; the batch stays valid until the next call
//                           of next() or start_epoch().
// Memory: host_slots x (files + CPU-decoded images of a batch) pinned, 2 x decode_streams x (decoded
// images of a batch) + out_slots x (B x C x H x W + B x classes) fp32 on the device.
//
// A file that cannot be read or decoded: next() throws kat::Error naming it (in batch order), or,
// with skip_bad, the sample is left out of its batch (n < B) and counted in bad_files().
// CUDA builds with nvJPEG only (KAT_HAVE_NVJPEG).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/cuda/nvjpeg_decoder.h"
#include "kat/data/augment.h"
#include "kat/data/dataset.h"
#include "kat/data/loader.h"

namespace kat::data::cuda {

struct GpuBatch {
  int n = 0, c = 0, h = 0, w = 0, classes = 0;
  const float* images = nullptr;   // device, (n, c, h, w), normalised
  const float* targets = nullptr;  // device, (n, classes) soft targets (smoothing / mixing applied)
  std::vector<int32_t> labels;     // (n) host, before mixing
  std::vector<int64_t> indices;    // (n) dataset indices
  int64_t epoch = 0, batch = 0;
  MixResult mix;
};

constexpr int kMaxDecodeStreams = 8;

struct GpuLoaderOptions {
  int device = 0;         // CUDA device
  int read_threads = 0;   // file readers (0: all cores but one, at most 32)
  int host_slots = 0;     // batches read ahead (0: 2 + 2 x decode_streams)
  int out_slots = 3;      // augmented batches on the device (the caller holds one)
  bool skip_bad = false;  // leave unreadable files out of their batch instead of failing
  // Fraction in [0, 1] of the files nvJPEG would take that the reader threads decode with
  // libjpeg-turbo instead (the CPU fallback's decode), so the CPU cores and the JPEG engine share
  // the work. Which files: cpu_decode_chosen(index, share), a hash of the dataset index, so the
  // batches do not depend on timing (their pixels do depend on the share: the two decoders round
  // differently, see nvjpeg_decoder.h). 0: nvJPEG takes all it can (the default).
  double cpu_decode_share = 0.0;
  // nvJPEG decoders, each with a host thread and a CUDA stream of its own (1 .. kMaxDecodeStreams):
  // batches are decoded in order by whichever is free, so with N, N batches' decodes are in flight.
  // The host part of a batched hardware decode is ~75 us per image on an H100 and the engine has
  // room for several: the pipeline alone went 13.5k -> 19.2k -> 24.5k -> 24.2k -> 22.3k img/s with
  // 1 -> 2 -> 3 -> 4 -> 8 (H100, 2026-12-07, docs/DATA_PIPELINE.md). The pixels are the same
  // whatever the count.
  int decode_streams = 3;
  // The loader's streams (decode and augmentation) at the device's greatest priority, so that while
  // a training step fills the SMs the pipeline's kernels start first. EXPERIMENTAL, off by default:
  // the pipeline alone runs as fast with it (data_bench --priority high), but the one `kat train`
  // run tried with it (H100, 2026-12-07) made no progress in 8 minutes (not diagnosed; the
  // training kernels use programmatic dependent launch, griddepcontrol). kat train
  // --decode-priority high.
  bool high_priority = false;
  // The loader's host threads (readers, decode, augmenting) at this niceness (0 .. 19, Linux
  // setpriority per thread), so that on a host with fewer cores than threads the caller's thread
  // (the training step's launches) is not preempted by them. 0: the process's priority.
  int thread_nice = 0;
  // next() gives up with a kat::Error saying what the batch waits for (files, decode, augmentation,
  // the GPU) when the pipeline makes no progress for this many seconds (also printed at once: a
  // stuck GPU may keep the loader's threads from being joined). 0: wait forever.
  double stall_timeout_s = 300;
};

// True when the file of dataset index `index` is decoded on the CPU under cpu_decode_share `share`:
// a splitmix64 hash of the index, as a fraction in [0, 1), below `share`. The set chosen grows
// with share (a file chosen at 0.25 is chosen at 0.5) and is the same every epoch and run.
bool cpu_decode_chosen(int64_t index, double share);

// Where the pipeline's time went so far (seconds, summed since construction): to tell the reader
// threads, the decode and augmenting threads' host work and the GPU apart.
struct PipelineTimes {
  int64_t batches = 0;         // batches the augmenting thread built
  double device_idle = 0;      // augmenting thread waiting for a decoded batch or a free output slot
  double decode_idle = 0;      // decode threads waiting for a batch's files or a free arena (thread-seconds)
  double device_decode = 0;    // decode threads inside NvjpegDecoder::decode (thread-seconds)
  double device_augment = 0;   // augmenting thread enqueueing the augmentation
  double device_wait_gpu = 0;  // augmenting thread waiting for the previous batch's GPU work
  double read = 0;             // reader threads reading files (thread-seconds)
  double cpu_decode = 0;       // reader threads decoding on the CPU (thread-seconds)
  double next_wait = 0;        // next() waiting for its batch (the consumer starved)
  // Per batch (seconds, mean over the batches timed), on the GPU from the first to the last of the
  // phase's work on its stream, waiting for SMs included: while a training step shares the GPU,
  // these grow by the time the loader's kernels queue behind the step's.
  double gpu_decode = 0;   // a batch's nvJPEG decode (and uploads of CPU-decoded images)
  double gpu_augment = 0;  // a batch's augmentation
};

class GpuLoader {
 public:
  // ds: a lazy folder dataset (files, decode_size), kept by reference. Throws kat::Error naming
  // what does not fit (an eager dataset, bad config).
  GpuLoader(const Dataset& ds, LoaderConfig cfg, GpuLoaderOptions opt = {});
  ~GpuLoader();  // stops and joins the threads
  GpuLoader(const GpuLoader&) = delete;
  GpuLoader& operator=(const GpuLoader&) = delete;

  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  const LoaderConfig& config() const { return cfg_; }
  int out_channels() const { return ds_.channels; }
  int out_height() const { return aug_out_h(cfg_.aug, ds_.height); }
  int out_width() const { return aug_out_w(cfg_.aug, ds_.width); }

  // Begin `epoch` at batch `first_batch` (bit-exact resume); drops anything read ahead.
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  // The next batch in order (false at the end of the epoch); errors of its files are thrown here.
  bool next(GpuBatch& out);
  int64_t position() const { return next_deliver_; }
  int64_t epoch() const { return epoch_; }

  DecodeStats decode_stats() const;  // where the images went so far
  std::string decode_backend() const;
  int decode_threads() const;  // GpuLoaderOptions::decode_streams, as started
  int64_t bad_files() const;   // samples skipped so far with skip_bad (a bad file once per epoch read)
  PipelineTimes times() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  const Dataset& ds_;
  LoaderConfig cfg_;
  int64_t batches_per_epoch_ = 0;
  int64_t epoch_ = 0, next_deliver_ = 0;
};

}  // namespace kat::data::cuda
