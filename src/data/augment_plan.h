// Every random decision of one sample's augmentation, drawn up front ("plan"), then applied to the
// pixels ("apply"). The CPU loader (make_batch) draws a plan with plan_sample() and applies it with
// apply_augment(); a device (the GPU augmenter, data/cuda/gpu_augment.h) applies the same plan, so
// both make exactly the same decisions. Nothing in a plan depends on pixel values: every draw
// depends only on the config, the image size and the sample's Rng stream
// Rng(seed_hash({seed, epoch, index, seed_tag("aug")})), drawn in this order:
//   crop  pad: dy, dx | rrc: torchvision RandomResizedCrop.get_params (up to 10 x (scale, log
//         ratio), then y, x) | none: nothing
//   flip  uniform < 0.5 (only with hflip)
//   RandAugment, per step: op index, the probability draw (only when p < 1; a failed draw skips
//         the rest of the step), the magnitude's normal (only when mstd > 0), the sign (signed ops)
//   erase uniform < p, then up to 10 x (area, log aspect), then top, left; the CPU then draws the
//         rectangle's N(0, 1) noise from the same stream (the GPU from noise_seed instead).
// The batch's Mixup / CutMix decision comes from the batch's Rng(seed_hash({seed, epoch, batch,
// seed_tag("mix")})) through plan_mix().
#pragma once
#include <cstdint>
#include <vector>

#include "kat/core/rng.h"
#include "kat/data/augment.h"
#include "kat/data/dataset.h"
#include "kat/data/loader.h"

namespace kat::data {

inline constexpr int kMaxRandAugSteps = 16;  // validate() caps randaug_n at 16

struct RandAugStep {
  RandAugOp op = RandAugOp::Identity;
  bool applied = false;  // the probability draw passed
  double magnitude = 0;  // after the N(m, mstd) draw, clipped to [0, 10]
  double sign = 1;       // +1 / -1 for signed ops (drawn only for them, as the CPU does)
};

struct SamplePlan {
  // Source image as decoded (full file) and the fit applied before augmenting (as the lazy
  // loader's read_image: none / training fit to fit_size / timm eval fit with eval_crop_pct).
  int src_h = 0, src_w = 0, channels = 0;  // channels: the decoded file's (1 or 3)
  enum class Fit { None, TrainFit, EvalFit } fit = Fit::None;
  int fit_size = 0;
  double fit_crop_pct = 1.0;
  // The augmentation's input (the fitted image, or the source when fit is None) and output.
  // aug_c: the dataset's channel count (the source is converted to it first, gray <-> RGB).
  int aug_h = 0, aug_w = 0, aug_c = 0;
  int out_h = 0, out_w = 0;
  bool train = false;  // false: the eval transform (resize / center crop only)
  // Crop (in the fitted image's coordinates) and flip.
  enum class Crop { None, Pad, Rrc } crop = Crop::None;
  int pad_dy = 0, pad_dx = 0;                      // Pad: offsets in [0, 2 * padding]
  int box_y = 0, box_x = 0, box_h = 0, box_w = 0;  // Rrc: the source box
  bool flip = false;
  int randaug_steps = 0;
  RandAugStep randaug[kMaxRandAugSteps];
  // Random erasing (after normalisation): the rectangle; noise from noise_seed on the device.
  bool erase = false;
  int erase_top = 0, erase_left = 0, erase_h = 0, erase_w = 0;
  uint64_t noise_seed = 0;
  // The sample Rng's state right after the rectangle was drawn: the CPU draws its noise from there.
  uint64_t cpu_noise_state[2] = {0, 0};
};

// ---- planning (host) -------------------------------------------------------------------------------
// Decisions for dataset sample `index` of `epoch` whose decoded source image is src_h x src_w x
// channels (the full file, as the lazy loader's read_original gives it; for in-memory datasets the
// stored image, ds.height x ds.width). `ds` supplies the fitting the CPU loader applies before
// augmenting (decode_size, eval_crop_pct) and the channel count the augmentation works in.
// Thread-safe. Throws kat::Error on sizes that disagree with the dataset.
SamplePlan plan_sample(const LoaderConfig& cfg, const Dataset& ds, int64_t epoch, int64_t index, int src_h,
                       int src_w, int channels);
// The augmentation decisions for an h x w x c input drawn from rng (plan_sample's core; also what
// augment_image draws). Sets aug_*, out_*, train, crop .. cpu_noise_state; leaves src / fit alone.
void plan_augment(const AugmentConfig& cfg, Rng& rng, int h, int w, int c, SamplePlan& p);
// Random erasing's decision for an h x w image (always draws the probability uniform, as the CPU's
// random_erase): erase, the rectangle, cpu_noise_state.
void plan_erase(double probability, Rng& rng, int h, int w, SamplePlan& p);

// ---- applying on the CPU -----------------------------------------------------------------------------
// The augmentation part of a plan: src is the augmentation's input (aug_h x aug_w x aug_c HWC
// uint8); out gets aug_c x out_h x out_w floats. lut: make_norm_lut(cfg, aug_c). Erasing noise is
// drawn from an Rng at plan.cpu_noise_state (bitwise what augment_image makes).
void apply_augment(const uint8_t* src, const SamplePlan& p, const AugmentConfig& cfg, const float* lut,
                   AugScratch& scratch, float* out);
// The whole plan from the decoded source (plan.src_h x plan.src_w x plan.channels): the fit (in the
// source's channels) and the channel conversion, then apply_augment. (The CPU loader fits in read_image instead,
// where a large JPEG may be decoded at a reduced DCT scale first; from a full decode the two agree exactly.)
void apply_plan(const uint8_t* src, const SamplePlan& p, const AugmentConfig& cfg, const float* lut,
                AugScratch& scratch, float* out);
// Fit + channel conversion only (as read_image / read_original): the augmentation's input
// (aug_h x aug_w x aug_c) into `out`.
void fit_source(const uint8_t* src, const SamplePlan& p, std::vector<uint8_t>& out);

// ---- RandAugment op parameters -------------------------------------------------------------------
// What one applied step does to an h x w image, computed on the host from its decisions (so a device
// gets the CPU's exact coefficients): the inverse affine map of the geometric ops (output pixel
// centre (X, Y) samples the input at (a X + b Y + t0, d X + e Y + t1)), the enhance factor, the
// solarize threshold / addend, the posterize mask.
struct RandAugParams {
  RandAugOp op = RandAugOp::Identity;
  double a = 1, b = 0, t0 = 0, d = 0, e = 1, t1 = 0;  // Rotate / Shear* / Translate*
  float factor = 1.f;                                 // Contrast / Brightness / Color / Sharpness
  int thresh = 256;                                   // Solarize: v >= thresh -> 255 - v
  int add = 0;                                        // SolarizeAdd: v < 128 -> min(255, v + add)
  uint8_t mask = 0xFF;                                // Posterize: v & mask
};
RandAugParams randaug_params(const RandAugStep& step, int h, int w);
bool randaug_signed(RandAugOp op);  // ops whose direction is drawn (the sign draw)
// One step on an h x w x c HWC uint8 image in place.
void apply_randaug(const RandAugParams& prm, uint8_t* img, int h, int w, int c, int fill,
                   std::vector<uint8_t>& scratch);

// ---- Mixup / CutMix ----------------------------------------------------------------------------------
// The batch's mixing decision (lam, cutmix, box, applied) for n images of h x w, drawn from rng as
// mix_batch does, without pixels.
MixResult plan_mix(const MixConfig& cfg, Rng& rng, int n, int h, int w);
// The loader's mix config (eval: never mixes) and the decision for batch `batch` of `epoch` from its
// Rng(seed_hash({seed, epoch, batch, seed_tag("mix")})).
MixConfig batch_mix_config(const LoaderConfig& cfg);
MixResult plan_batch_mix(const LoaderConfig& cfg, int64_t epoch, int64_t batch, int n, int h, int w);
// Apply a decision to images (n, c, h, w) in place (sample i with n - 1 - i).
void apply_mix(const MixResult& r, float* images, int n, int c, int h, int w);
// Soft targets (n, classes): lam * onehot(y_i) + (1 - lam) * onehot(y_{n-1-i}), then label smoothing.
void mix_targets(const MixConfig& cfg, const MixResult& r, const int32_t* labels, int n, int classes,
                 float* targets);

}  // namespace kat::data
