// GPU augmentation of decoded images: the training and eval transforms of the CPU loader
// (data/augment.h) run as CUDA kernels on images already on the device (decoded by nvJPEG, or
// decoded on the CPU and uploaded). CUDA builds only.
//
// Contract between the two halves of the GPU data pipeline (issue #11):
//   - the host side (a loader worker thread) reads the file header (height x width), then draws
//     every random decision of the sample with plan_sample(): the same per-sample Rng stream and the
//     same draw order as the CPU loader's augment_image(), so the decisions are identical;
//   - the device side decodes the file to HWC uint8 and runs GpuAugmenter::run() on a whole batch:
//     fit / crop / resize / flip / RandAugment / normalize / random erasing per sample, then
//     Mixup / CutMix over the batch (its decision drawn from the batch's "mix" stream, as
//     make_batch() does), writing the engine's input (n, c, oh, ow) fp32 and soft targets
//     (n, classes) fp32, both in device memory.
// Pixels are the CPU's (apply_plan) bit for bit on identical plans (the CPU's resampling taps, the
// shared arithmetic of data/augment_math.h; why, in the .cu file; tested in
// tests/gpu/test_gpu_augment.cu), except random-erasing noise: drawn on the device from the plan's
// noise_seed, so its values (not its rectangle) differ from the CPU's.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "data/augment_plan.h"
#include "data/resample.h"
#include "kat/data/augment.h"
#include "kat/data/dataset.h"
#include "kat/data/loader.h"

typedef struct CUstream_st* cudaStream_t;

namespace kat::data {

// SamplePlan and plan_sample(): data/augment_plan.h (host code, in katlib). The pipeline treats a
// plan as an opaque value it passes from plan_sample() to GpuAugmenter::run().

namespace cuda {

// One decoded image in device memory: HWC uint8, rows `row_bytes` apart (>= w * c).
struct DeviceImage {
  const uint8_t* pixels = nullptr;
  int h = 0, w = 0, c = 0;
  int64_t row_bytes = 0;
};

// The host-side part of one sample's augmentation that depends on its plan alone: the resampling
// taps of its fit and its crop (the CPU's make_taps / pil_taps, uploaded with the batch). A pure
// function of (plan, augmenter geometry), so a loader computes it on its reader threads, beside the
// plan, and run() only assembles the batch (for a 256-image RandomResizedCrop batch the taps are
// ~2.7 ms of host time on one core, which would otherwise sit on the augmenting thread).
struct SampleTaps {
  Taps fit_x, fit_y;               // Fit::TrainFit: bilinear taps of the shorter-side crop
  PilTaps pil_x, pil_y;            // Fit::EvalFit: PIL bicubic taps of the resize
  EvalFitGeometry eval;            // Fit::EvalFit: the resize and its center crop
  int tmp_row0 = 0, tmp_rows = 0;  // Fit::EvalFit: the source rows the crop's output rows need
  Taps crop_x, crop_y;             // the crop + resize (identity taps where the CPU copies)
};

class GpuAugmenter {
 public:
  // out_c x out_h x out_w: the engine's input geometry (Loader::out_*), classes: target width.
  // max_batch: the largest n passed to run() (scratch is planned for it once).
  GpuAugmenter(const LoaderConfig& cfg, int out_c, int out_h, int out_w, int classes, int max_batch);
  ~GpuAugmenter();
  GpuAugmenter(const GpuAugmenter&) = delete;
  GpuAugmenter& operator=(const GpuAugmenter&) = delete;

  // Augment batch `batch` of `epoch`: images[i] with plans[i] (host arrays of n), labels (host, n,
  // in [0, classes)). Writes d_images (n, out_c, out_h, out_w) and d_targets (n, classes) on
  // `stream`; returns what mixing did (decided on the host, as the CPU loader does). Enqueues only:
  // the caller synchronises `stream` before reusing the source images. Intermediate buffers are
  // reused from call to call: successive calls use one stream (or the caller orders them). A plan
  // that does not match its image (size, channels) or this augmenter's geometry throws kat::Error.
  // Images may have 1 or 3 channels whatever out_c is (gray <-> RGB as the CPU loader converts).
  // taps: (optional, n pointers) prepare_taps() of each plan, computed beforehand (by a loader's
  // reader threads); null: run() computes them.
  MixResult run(const DeviceImage* images, const SamplePlan* plans, const int32_t* labels, int n, int64_t epoch,
                int64_t batch, float* d_images, float* d_targets, cudaStream_t stream,
                const SampleTaps* const* taps = nullptr);

  // The taps run() needs for `plan` (thread-safe: reads only the augmenter's fixed geometry).
  void prepare_taps(const SamplePlan& plan, SampleTaps& taps) const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace cuda
}  // namespace kat::data
