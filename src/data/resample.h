// The resampling filters behind image_io's resize functions, exposed so a device (the GPU
// augmenter, data/cuda/gpu_augment.cu) can use the very taps the CPU computes (the same weights,
// bit for bit) and the same crop geometry.
#pragma once
#include <cstdint>
#include <vector>

namespace kat::data {

// Antialiased bilinear (triangle) taps of resample_bilinear: output i of out_size sums source
// samples start[i] .. start[i] + count[i] - 1 with weights[i * maxk + j] (fp32, normalised), in
// ascending order with fused multiply-adds.
struct Taps {
  std::vector<int> start, count;
  std::vector<float> weights;  // count per output, padded to `maxk`
  int maxk = 0;
};
// Triangle filter over the source interval [in0, in0 + in_len) mapped onto out_size samples.
void make_taps(double in0, double in_len, int in_size, int out_size, Taps& t);

// PIL's bicubic (a = -0.5) taps for a full-image resize in_size -> out_size: first / count per
// output and ksize fixed-point weights each (kPilPrecisionBits fraction bits).
inline constexpr int kPilPrecisionBits = 32 - 8 - 2;  // 255 x the positive weights' sum fits int32
struct PilTaps {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> k;
};
void pil_taps(int in_size, int out_size, PilTaps& t);
// floor(ss / 2^22) clamped to [0, 255] (PIL's clip8; >> of a negative int is arithmetic).
inline uint8_t pil_clip8(int32_t ss) {
  const int32_t v = ss >> kPilPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// A source box [x0, x0 + w) x [y0, y0 + h) in source pixels (what resample_bilinear reads).
struct SourceBox {
  double y0 = 0, x0 = 0, h = 0, w = 0;
};
// resize_shorter_center_crop's box (the lazy training fit: shorter side to size, center size x size).
SourceBox shorter_side_crop_box(int sh, int sw, int size);
// The augmentation's resize + center crop of an h x w image to oh x ow: shorter side to
// max(oh, ow) / crop_pct, center crop.
SourceBox center_crop_box(int h, int w, int oh, int ow, double crop_pct);

// eval_resize_center_crop's geometry: the bicubic resize to rh x rw, then the crop at (top, left).
struct EvalFitGeometry {
  int rh = 0, rw = 0, top = 0, left = 0;
};
EvalFitGeometry eval_fit_geometry(int sh, int sw, int size, double crop_pct);

}  // namespace kat::data
