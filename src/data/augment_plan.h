// Every random decision of one sample's augmentation, drawn up front. The CPU loader's
// augment_image() draws these from the sample's Rng while it transforms the pixels; plan_sample()
// draws the same values in the same order without touching pixels, so a device (the GPU augmenter,
// data/cuda/gpu_augment.h) can apply exactly the decisions the CPU would have made.
// Nothing here depends on pixel values: every draw depends only on the config and the image size.
#pragma once
#include <cstdint>

#include "kat/data/augment.h"

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
  int src_h = 0, src_w = 0, channels = 0;
  enum class Fit { None, TrainFit, EvalFit } fit = Fit::None;
  int fit_size = 0;
  double fit_crop_pct = 1.0;
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
};

}  // namespace kat::data
