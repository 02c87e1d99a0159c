// A JPEG's decoded component planes (Y at full size, Cb and Cr subsampled: what a JPEG decoder has
// before it upsamples chroma) to one RGB pixel, bit for bit as libjpeg-turbo's default decode
// computes it, so the CPU loader and a GPU path that converts nvJPEG's planar YUV output itself
// (data/cuda/ycbcr_to_rgb.cu) give the same pixels from the same planes.
//
//  * Chroma upsampling is libjpeg's default "fancy" (triangle) filter: an output sample takes the
//    chroma sample it lies in with weight 3 and the nearer neighbour with weight 1, per subsampled
//    axis; a neighbour past the plane's edge is the edge sample itself. libjpeg rounds the two
//    output phases with different biases (so that the rounding errors do not all go one way):
//      one axis (4:2:2 horizontally, 4:4:0 vertically):  (3 * near + far + {1, 2}) >> 2
//      both axes (4:2:0): column sums s = 3 * near_row + far_row, then
//                         (3 * s_near + s_far + {8, 7}) >> 4
//    where the first bias is for the output sample on the low side (even index) of its chroma
//    sample, the second for the high side. Exception (libjpeg's): chroma subsampled horizontally
//    and at most 2 samples wide is replicated, not filtered.
//  * Colour is JFIF's full-range BT.601 in libjpeg's 16-bit fixed point:
//      R = Y + round(1.40200 (Cr - 128)),  B = Y + round(1.77200 (Cb - 128)),
//      G = Y + floor((-0.34414 (Cb - 128) - 0.71414 (Cr - 128)) * 2^16 + 2^15) / 2^16
//    with each coefficient rounded to a multiple of 2^-16 first, clamped to [0, 255].
// Tested against libjpeg-turbo itself (its raw planes through this == its RGB output, every pixel,
// for 4:4:4, 4:2:2, 4:2:0 and 4:4:0 at odd sizes): tests/test_ycbcr.cpp.
// Plain header, no CUDA dependency: KAT_YCC_HD marks the functions host+device under nvcc.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define KAT_YCC_HD __host__ __device__
#else
#define KAT_YCC_HD
#endif

namespace kat::data::ycbcr {

// One image's planes. Chroma planes are c_width x c_height = ceil(width / h_factor) x
// ceil(height / v_factor) samples (the JPEG's "downsampled" size); rows `pitch` bytes apart;
// consecutive chroma samples c_step bytes apart: 1 for separate Cb and Cr planes (planar YUV), 2
// for one interleaved CbCr plane (NV12: cb = the plane, cr = the plane + 1).
struct Planes {
  const uint8_t* y = nullptr;
  const uint8_t* cb = nullptr;
  const uint8_t* cr = nullptr;
  int y_pitch = 0, c_pitch = 0;
  int width = 0, height = 0;       // the image (the Y plane)
  int c_width = 0, c_height = 0;   // the chroma planes
  int h_factor = 1, v_factor = 1;  // 1 or 2: 4:4:4 = 1x1, 4:2:2 = 2x1, 4:2:0 = 2x2, 4:4:0 = 1x2
  int c_step = 1;
};

// True for the subsamplings above (the ones this conversion reproduces).
KAT_YCC_HD inline bool supported(int h_factor, int v_factor) {
  return (h_factor == 1 || h_factor == 2) && (v_factor == 1 || v_factor == 2);
}

KAT_YCC_HD inline int clamp_index(int i, int n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

// The chroma value of `plane` at image pixel (x, y), upsampled as libjpeg does (see the top).
KAT_YCC_HD inline int upsampled(const Planes& p, const uint8_t* plane, int x, int y) {
  const auto at = [&](int cx, int cy) -> int {
    return plane[size_t(clamp_index(cy, p.c_height)) * size_t(p.c_pitch) +
                 size_t(clamp_index(cx, p.c_width)) * size_t(p.c_step)];
  };
  if (p.h_factor == 1 && p.v_factor == 1) return at(x, y);
  // libjpeg upsamples horizontally subsampled chroma only two samples wide or less by plain
  // replication (its fancy filters want a left and a right neighbour).
  if (p.h_factor == 2 && p.c_width <= 2) return at(x >> 1, y / p.v_factor);
  if (p.v_factor == 1) {  // 4:2:2: horizontally only
    const int i = x >> 1;
    return (x & 1) ? (3 * at(i, y) + at(i + 1, y) + 2) >> 2 : (3 * at(i, y) + at(i - 1, y) + 1) >> 2;
  }
  if (p.h_factor == 1) {  // 4:4:0: vertically only
    const int r = y >> 1;
    return (y & 1) ? (3 * at(x, r) + at(x, r + 1) + 2) >> 2 : (3 * at(x, r) + at(x, r - 1) + 1) >> 2;
  }
  // 4:2:0: column sums of the nearer and the farther chroma row, then the same along the row.
  const int r = y >> 1, rf = (y & 1) ? r + 1 : r - 1;
  const auto colsum = [&](int cx) { return 3 * at(cx, r) + at(cx, rf); };
  const int i = x >> 1;
  return (x & 1) ? (3 * colsum(i) + colsum(i + 1) + 7) >> 4 : (3 * colsum(i) + colsum(i - 1) + 8) >> 4;
}

KAT_YCC_HD inline uint8_t clamp_u8(int v) { return uint8_t(v < 0 ? 0 : (v > 255 ? 255 : v)); }

// JFIF YCbCr -> RGB in libjpeg's fixed point (coefficients * 2^16, rounded to the nearest integer;
// >> of a negative int is an arithmetic shift in C++20 and CUDA).
KAT_YCC_HD inline void to_rgb(int luma, int cb, int cr, uint8_t* rgb) {
  constexpr int kHalf = 1 << 15;
  constexpr int kCrR = 91881;   // 1.40200 * 2^16
  constexpr int kCbB = 116130;  // 1.77200 * 2^16
  constexpr int kCbG = 22554;   // 0.34414 * 2^16
  constexpr int kCrG = 46802;   // 0.71414 * 2^16
  const int u = cb - 128, v = cr - 128;
  rgb[0] = clamp_u8(luma + ((kCrR * v + kHalf) >> 16));
  rgb[1] = clamp_u8(luma + ((-kCbG * u - kCrG * v + kHalf) >> 16));
  rgb[2] = clamp_u8(luma + ((kCbB * u + kHalf) >> 16));
}

// Pixel (x, y) of the image as interleaved RGB into rgb[0..3).
KAT_YCC_HD inline void pixel(const Planes& p, int x, int y, uint8_t* rgb) {
  to_rgb(p.y[size_t(y) * size_t(p.y_pitch) + size_t(x)], upsampled(p, p.cb, x, y), upsampled(p, p.cr, x, y), rgb);
}

// The whole image, rows width * 3 bytes apart (the CPU reference of the GPU conversion).
inline void to_rgb_image(const Planes& p, uint8_t* rgb) {
  for (int y = 0; y < p.height; ++y)
    for (int x = 0; x < p.width; ++x) pixel(p, x, y, rgb + (size_t(y) * size_t(p.width) + size_t(x)) * 3);
}

}  // namespace kat::data::ycbcr
