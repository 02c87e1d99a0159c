// Per-sample augmentation (crop / flip / RandAugment on uint8, normalize, random erasing on float)
// and batch-level Mixup / CutMix with timm semantics. All randomness comes from a kat::Rng passed in,
// so results are a pure function of that Rng's seed.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "kat/core/rng.h"

namespace kat::data {

// ---- seeding -------------------------------------------------------------------------------------
// Order-sensitive 64-bit hash of a list of words (splitmix64 finalizer chain).
uint64_t seed_hash(std::initializer_list<uint64_t> words);
// FNV-1a of a short tag ("aug", "mix", "perm") for use in seed_hash.
constexpr uint64_t seed_tag(const char* s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; ++s) h = (h ^ static_cast<uint8_t>(*s)) * 0x100000001b3ull;
  return h;
}

struct AugmentConfig {
  bool train = true;              // false: deterministic eval transform (resize + normalize only)
  int out_size = 0;               // output H = W (0 = dataset size; non-square datasets need 0)
  std::string crop = "none";      // "none" | "pad" | "rrc"
  int padding = 4;                // "pad": pad by this much then random crop back to the input size
  std::string pad_mode = "zero";  // "zero" (fill value `fill`) | "reflect"
  double rrc_scale_min = 0.08, rrc_scale_max = 1.0;
  double rrc_ratio_min = 3.0 / 4.0, rrc_ratio_max = 4.0 / 3.0;
  double eval_crop_pct = 1.0;  // eval: resize to out_size / crop_pct then center crop (1 = plain resize)
  bool hflip = false;          // random horizontal flip, p = 0.5
  int randaug_n = 0;           // RandAugment: number of ops (0 = off)
  double randaug_m = 9, randaug_mstd = 0.5;  // magnitude ~ N(m, mstd) clipped to [0, 10]
  double randaug_p = 0.5;                    // each chosen op is applied with this probability (timm default 0.5)
  int fill = 0;                              // fill value for pad "zero" and RandAugment warps
  double random_erase = 0.0;     // probability of erasing one rectangle with N(0,1) noise after normalize
  std::vector<float> mean, std;  // per channel (or one value for all), after /255; default 0.5 / 0.5
};

// timm Mixup, batch mode. label_smoothing is applied into the targets (so the loss must use 0).
struct MixConfig {
  double mixup_alpha = 0, cutmix_alpha = 0, prob = 1.0, switch_prob = 0.5, label_smoothing = 0;
  bool correct_lam = true;
  bool enabled() const { return mixup_alpha > 0 || cutmix_alpha > 0; }
};

// Check a config against an image type; throws kat::Error naming the bad field.
void validate(const AugmentConfig& cfg, int height, int width, int channels);
// Output size of the augmentation for a dataset of height x width.
inline int aug_out_h(const AugmentConfig& cfg, int height) { return cfg.out_size > 0 ? cfg.out_size : height; }
inline int aug_out_w(const AugmentConfig& cfg, int width) { return cfg.out_size > 0 ? cfg.out_size : width; }

// Normalization tables: lut[c * 256 + v] = (v / 255 - mean[c]) / std[c].
std::vector<float> make_norm_lut(const AugmentConfig& cfg, int channels);

// Reusable per-thread buffers.
struct AugScratch {
  std::vector<uint8_t> a, b;
  std::vector<float> f;
};

// Augment one HWC uint8 image (h x w x c) into a CHW float image (c x oh x ow, see aug_out_*),
// drawing from rng. lut from make_norm_lut.
void augment_image(const uint8_t* src, int h, int w, int c, const AugmentConfig& cfg, const float* lut, Rng& rng,
                   AugScratch& scratch, float* out);

// Eval preprocessing of one decoded image (e.g. from decode_image_file, for `kat predict`): convert
// channels c -> out_channels (gray <-> RGB, ITU-R 601 luma), then the eval transform of `cfg`
// (train forced off; cfg.out_size = 0 keeps the size). Returns CHW floats; sets out_h / out_w.
std::vector<float> eval_transform(const uint8_t* src, int h, int w, int c, int out_channels,
                                  const AugmentConfig& cfg, int* out_h = nullptr, int* out_w = nullptr);

// ---- RandAugment ops (uint8 HWC, in place) -----------------------------------------------------
enum class RandAugOp {
  Identity,
  Rotate,
  ShearX,
  ShearY,
  TranslateX,
  TranslateY,
  AutoContrast,
  Equalize,
  Solarize,
  Posterize,
  Contrast,
  Brightness,
  Sharpness,
  Color,
  SolarizeAdd
};
const char* randaug_op_name(RandAugOp op);
// The op list used for an image with `channels` channels (gray: no Color / SolarizeAdd).
const std::vector<RandAugOp>& randaug_ops(int channels);
// Apply one op with magnitude in [0, 10]; rng decides the sign of signed ops.
void apply_randaug_op(RandAugOp op, double magnitude, Rng& rng, uint8_t* img, int h, int w, int c, int fill,
                      std::vector<uint8_t>& scratch);
// Full RandAugment policy (n ops, with replacement, each with probability p and its own magnitude).
void rand_augment(const AugmentConfig& cfg, Rng& rng, uint8_t* img, int h, int w, int c,
                  std::vector<uint8_t>& scratch);

// ---- Random erasing (timm RandomErasing, mode "pixel", count 1) on a CHW float image --------------
void random_erase(float* img, int c, int h, int w, double probability, Rng& rng);

// ---- Mixup / CutMix -------------------------------------------------------------------------------
struct MixResult {
  double lam = 1.0;
  bool applied = false, cutmix = false;
  int y0 = 0, y1 = 0, x0 = 0, x1 = 0;  // CutMix box [y0,y1) x [x0,x1)
};
// Mix images (n, c, h, w) in place with the batch flipped (sample i with n-1-i) and write soft targets
// (n, classes): lam * onehot(y) + (1 - lam) * onehot(y_flipped), then t * (1 - ls) + ls / classes.
// Without mixing (config off or the prob draw fails) targets are smoothed one-hot.
MixResult mix_batch(const MixConfig& cfg, Rng& rng, float* images, int n, int c, int h, int w,
                    const int32_t* labels, int classes, float* targets);

}  // namespace kat::data
