// GpuAugmenter: the CPU loader's per-sample transforms and batch mixing as CUDA kernels, applying
// the plans drawn on the host (data/augment_plan.h).
//
// Stages (each a kernel over the whole batch, grid.y = sample; one job struct per sample and kernel,
// built on the host and uploaded with one copy per batch):
//   1. fit        lazy-folder fit of the decoded file: bilinear (training fit) or PIL bicubic in
//                 two passes (eval fit), in the file's channels, then gray <-> RGB; or the
//                 conversion alone (RandomResizedCrop from the original)
//   2. pad        pad-crop (zero/fill or reflect, flip folded in) when crop = pad
//   3. resample   crop + resize + flip in one antialiased bilinear pass (identity taps for a copy)
//   4. RandAugment, per step: per-image statistics and tables (one block per image), then the op
//   5. finalize   normalise, random-erasing noise, Mixup / CutMix with the partner image, (n, c, h, w)
//   6. targets    soft targets with label smoothing (n, classes)
//
// How the pixels compare with the CPU's (apply_plan): the same bits, by construction, except the
// erasing noise. Resampling weights are the CPU's own (make_taps / pil_taps run on the host and are
// uploaded), summed in the CPU's order with fused multiply-adds; every other float expression is a
// shared function of data/augment_math.h with explicit FMAs; histograms, minima, maxima and sums
// are integers (their atomics give the same result in any order). The erasing rectangle is the
// CPU's; its N(0, 1) values come from a counter-based hash of (noise_seed, pixel index), so they are
// deterministic but not the CPU's values. tests/gpu/test_gpu_augment.cu checks all of this.
#include "data/cuda/gpu_augment.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "data/augment_math.h"
#include "data/resample.h"
#include "kat/core/error.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_memory.h"

namespace kat::data::cuda {

namespace {

namespace am = kat::data::augmath;
using kat::cuda::CudaEvent;
using kat::cuda::DeviceBuffer;
using kat::cuda::PinnedBuffer;

constexpr int kThreads = 256;

// PIL's clip8 (data/resample.h pil_clip8), on the device.
__device__ inline uint8_t pil_clip8_dev(int32_t ss) {
  const int32_t v = ss >> kPilPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Bilinear taps of one axis in device memory (the CPU's Taps, see data/resample.h).
struct DevTaps {
  const int* start = nullptr;
  const int* count = nullptr;
  const float* weights = nullptr;
  int maxk = 0;
};
// PIL bicubic taps of one axis (PilTaps).
struct DevPilTaps {
  const int* first = nullptr;
  const int* count = nullptr;
  const int32_t* k = nullptr;
  int ksize = 0;
};

// ---- stage 1/3: bilinear resampling ------------------------------------------------------------
// dst (dst_h x dst_w x dst_c) = the taps' resampling of src (rows src_row bytes apart, src_c
// channels); with src_c != dst_c each source channel is resampled and rounded, then converted
// (the training fit's order: fit in the file's channels, then convert). flip: mirror the output.
struct ResampleJob {
  const uint8_t* src = nullptr;
  int64_t src_row = 0;
  int src_c = 0;
  uint8_t* dst = nullptr;
  int dst_h = 0, dst_w = 0, dst_c = 0;
  int flip = 0;
  DevTaps tx, ty;
};

__device__ inline void convert_px(const uint8_t* v, int src_c, uint8_t* out, int dst_c) {
  if (src_c == dst_c) {
    for (int k = 0; k < dst_c; ++k) out[k] = v[k];
  } else if (src_c == 1) {
    out[0] = out[1] = out[2] = v[0];
  } else {
    out[0] = am::luma(v[0], v[1], v[2]);
  }
}

__global__ void resample_kernel(const ResampleJob* jobs) {
  const ResampleJob& j = jobs[blockIdx.y];
  if (!j.dst) return;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= static_cast<int64_t>(j.dst_h) * j.dst_w) return;
  const int y = static_cast<int>(p / j.dst_w), x = static_cast<int>(p % j.dst_w);
  const int sx = j.flip ? j.dst_w - 1 - x : x;  // the CPU flips the resampled image
  const int x0 = j.tx.start[sx], nx = j.tx.count[sx], y0 = j.ty.start[y], ny = j.ty.count[y];
  const float* wx = j.tx.weights + static_cast<int64_t>(sx) * j.tx.maxk;
  const float* wy = j.ty.weights + static_cast<int64_t>(y) * j.ty.maxk;
  uint8_t v[3];
  for (int k = 0; k < j.src_c; ++k) {
    float acc = 0.f;
    for (int r = 0; r < ny; ++r) {  // the CPU's vertical pass over its horizontal sums, in order
      const uint8_t* row = j.src + static_cast<int64_t>(y0 + r) * j.src_row;
      float h = 0.f;
      for (int i = 0; i < nx; ++i) h = am::fmaf_(wx[i], static_cast<float>(row[(x0 + i) * j.src_c + k]), h);
      acc = am::fmaf_(wy[r], h, acc);
    }
    v[k] = am::resample_round(acc);
  }
  convert_px(v, j.src_c, j.dst + p * j.dst_c, j.dst_c);
}

// ---- stage 1: PIL bicubic eval fit --------------------------------------------------------------
// Horizontal pass over the rows the vertical taps read (row0 ..), only the columns of the crop:
// tmp (rows x size x c); then the vertical pass at the crop's rows, rounded, converted to dst_c.
struct BicubicJob {
  const uint8_t* src = nullptr;
  int64_t src_row = 0;
  int c = 0;
  uint8_t* tmp = nullptr;
  int rows = 0, row0 = 0, size = 0, top = 0, left = 0;
  uint8_t* dst = nullptr;
  int dst_c = 0;
  DevPilTaps tx, ty;
};

__global__ void bicubic_h_kernel(const BicubicJob* jobs) {
  const BicubicJob& j = jobs[blockIdx.y];
  if (!j.dst) return;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= static_cast<int64_t>(j.rows) * j.size) return;
  const int r = static_cast<int>(p / j.size), xx = static_cast<int>(p % j.size) + j.left;
  const uint8_t* in =
      j.src + static_cast<int64_t>(r + j.row0) * j.src_row + static_cast<int64_t>(j.tx.first[xx]) * j.c;
  const int32_t* kk = j.tx.k + static_cast<int64_t>(xx) * j.tx.ksize;
  for (int ch = 0; ch < j.c; ++ch) {
    int32_t ss = 1 << (kPilPrecisionBits - 1);
    for (int x = 0; x < j.tx.count[xx]; ++x) ss += static_cast<int32_t>(in[x * j.c + ch]) * kk[x];
    j.tmp[p * j.c + ch] = pil_clip8_dev(ss);
  }
}

__global__ void bicubic_v_kernel(const BicubicJob* jobs) {
  const BicubicJob& j = jobs[blockIdx.y];
  if (!j.dst) return;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= static_cast<int64_t>(j.size) * j.size) return;
  const int y = static_cast<int>(p / j.size), x = static_cast<int>(p % j.size), yy = y + j.top;
  const int32_t* kk = j.ty.k + static_cast<int64_t>(yy) * j.ty.ksize;
  const int64_t stride = static_cast<int64_t>(j.size) * j.c;
  const uint8_t* base =
      j.tmp + static_cast<int64_t>(j.ty.first[yy] - j.row0) * stride + static_cast<int64_t>(x) * j.c;
  uint8_t v[3];
  for (int ch = 0; ch < j.c; ++ch) {
    int32_t ss = 1 << (kPilPrecisionBits - 1);
    for (int r = 0; r < j.ty.count[yy]; ++r) ss += static_cast<int32_t>(base[r * stride + ch]) * kk[r];
    v[ch] = pil_clip8_dev(ss);
  }
  convert_px(v, j.c, j.dst + p * j.dst_c, j.dst_c);
}

// ---- stage 1: channel conversion alone (the CPU's read_original converts before the crop) ----------
struct ConvertJob {
  const uint8_t* src = nullptr;
  int64_t src_row = 0;
  int src_c = 0, h = 0, w = 0;
  uint8_t* dst = nullptr;
  int dst_c = 0;
};

__global__ void convert_kernel(const ConvertJob* jobs) {
  const ConvertJob& j = jobs[blockIdx.y];
  if (!j.dst) return;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= static_cast<int64_t>(j.h) * j.w) return;
  const int y = static_cast<int>(p / j.w), x = static_cast<int>(p % j.w);
  convert_px(j.src + y * j.src_row + static_cast<int64_t>(x) * j.src_c, j.src_c, j.dst + p * j.dst_c, j.dst_c);
}

// ---- stage 2: pad-crop ----------------------------------------------------------------------------
struct PadJob {
  const uint8_t* src = nullptr;
  int64_t src_row = 0;
  uint8_t* dst = nullptr;  // h x w x c, contiguous
  int h = 0, w = 0, c = 0, pad = 0, dy = 0, dx = 0, flip = 0, reflect = 0, fill = 0;
};

__device__ inline int reflect_index(int i, int n) {
  if (i < 0) return -i;
  if (i >= n) return 2 * (n - 1) - i;
  return i;
}

__global__ void pad_kernel(const PadJob* jobs) {
  const PadJob& j = jobs[blockIdx.y];
  if (!j.dst) return;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= static_cast<int64_t>(j.h) * j.w) return;
  const int y = static_cast<int>(p / j.w), x = static_cast<int>(p % j.w);
  int sx = (j.flip ? j.w - 1 - x : x) + j.dx - j.pad, sy = y + j.dy - j.pad;
  if (sx < 0 || sx >= j.w) sx = j.reflect ? reflect_index(sx, j.w) : -1;
  if (sy < 0 || sy >= j.h) sy = j.reflect ? reflect_index(sy, j.h) : -1;
  uint8_t* o = j.dst + p * j.c;
  for (int k = 0; k < j.c; ++k)
    o[k] = sx < 0 || sy < 0 ? static_cast<uint8_t>(j.fill)
                            : j.src[sy * j.src_row + static_cast<int64_t>(sx) * j.c + k];
}

// ---- stage 4: RandAugment -------------------------------------------------------------------------
struct RandAugJob {
  uint8_t* buf[2] = {nullptr, nullptr};  // ping-pong images, h x w x c each
  int h = 0, w = 0, c = 0, fill = 0;
  uint8_t* lut = nullptr;  // 3 x 256: AutoContrast / Equalize tables
  int* mean = nullptr;     // Contrast's degenerate level
  int steps = 0;
  int applied[kMaxRandAugSteps] = {};
  RandAugParams prm[kMaxRandAugSteps];
};

// One block per image: the statistics the step's op needs (integer histograms, minima, maxima and
// sums: the same result in any order) and its tables, computed as augment.cpp computes them.
__global__ void randaug_prepare_kernel(const RandAugJob* jobs, int step, int src) {
  const RandAugJob& j = jobs[blockIdx.x];
  if (step >= j.steps || !j.applied[step]) return;
  const RandAugOp op = j.prm[step].op;
  if (op != RandAugOp::AutoContrast && op != RandAugOp::Equalize && op != RandAugOp::Contrast) return;
  __shared__ unsigned hist[3][256];
  __shared__ int lo[3], hi[3];
  __shared__ unsigned long long sum;
  for (int i = threadIdx.x; i < 3 * 256; i += blockDim.x) hist[i / 256][i % 256] = 0;
  if (threadIdx.x < 3) {
    lo[threadIdx.x] = 255;
    hi[threadIdx.x] = 0;
  }
  if (threadIdx.x == 0) sum = 0;
  __syncthreads();
  const uint8_t* img = j.buf[src];
  const int64_t np = static_cast<int64_t>(j.h) * j.w;
  unsigned long long part = 0;
  for (int64_t i = threadIdx.x; i < np; i += blockDim.x) {
    const uint8_t* px = img + i * j.c;
    if (op == RandAugOp::Contrast) {
      part += j.c == 3 ? am::luma(px[0], px[1], px[2]) : px[0];
    } else {
      for (int k = 0; k < j.c; ++k) {
        atomicAdd(&hist[k][px[k]], 1u);
        atomicMin(&lo[k], static_cast<int>(px[k]));
        atomicMax(&hi[k], static_cast<int>(px[k]));
      }
    }
  }
  if (op == RandAugOp::Contrast) atomicAdd(&sum, part);
  __syncthreads();
  if (op == RandAugOp::Contrast) {
    if (threadIdx.x == 0) *j.mean = am::mean_level(static_cast<double>(sum), static_cast<double>(np));
    return;
  }
  if (op == RandAugOp::AutoContrast) {
    for (int i = threadIdx.x; i < j.c * 256; i += blockDim.x) {
      const int k = i / 256, v = i % 256;
      j.lut[i] = hi[k] <= lo[k] ? static_cast<uint8_t>(v) : am::autocontrast_value(v, lo[k], hi[k]);
    }
    return;
  }
  if (threadIdx.x < j.c) {  // Equalize (PIL ImageOps.equalize): a serial scan per channel
    const int k = threadIdx.x;
    int64_t total = 0, last = 0, nonzero = 0;
    for (int v = 0; v < 256; ++v)
      if (hist[k][v]) {
        total += hist[k][v];
        last = hist[k][v];
        ++nonzero;
      }
    const int64_t stp = nonzero <= 1 ? 0 : (total - last) / 255;
    int64_t n = stp / 2;
    for (int v = 0; v < 256; ++v) {
      j.lut[k * 256 + v] =
          stp == 0 ? static_cast<uint8_t>(v) : static_cast<uint8_t>(n / stp < 255 ? n / stp : 255);
      n += hist[k][v];
    }
  }
}

__device__ inline float warp_src(const uint8_t* s, int h, int w, int c, int yy, int xx, int k, float fill) {
  if (yy < 0 || yy >= h || xx < 0 || xx >= w) return fill;
  return s[(static_cast<int64_t>(yy) * w + xx) * c + k];
}

// One output pixel of step `step` (all channels): buf[src] -> buf[1 - src].
__global__ void randaug_apply_kernel(const RandAugJob* jobs, int step, int src) {
  const RandAugJob& j = jobs[blockIdx.y];
  if (!j.buf[0]) return;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int h = j.h, w = j.w, c = j.c;
  if (p >= static_cast<int64_t>(h) * w) return;
  const uint8_t* s = j.buf[src];
  uint8_t* o = j.buf[1 - src] + p * c;
  const uint8_t* in = s + p * c;
  const bool active = step < j.steps && j.applied[step];
  const RandAugParams& m = j.prm[active ? step : 0];
  const RandAugOp op = active ? m.op : RandAugOp::Identity;
  using O = RandAugOp;
  switch (op) {
    case O::Rotate:
    case O::ShearX:
    case O::ShearY:
    case O::TranslateX:
    case O::TranslateY: {  // augment.cpp warp_affine
      const int y = static_cast<int>(p / w), x = static_cast<int>(p % w);
      const double Y = y + 0.5, X = x + 0.5;
      const double u = am::warp_coord(m.a, m.b, m.t0, X, Y), v = am::warp_coord(m.d, m.e, m.t1, X, Y);
      if (u <= -1.0 || v <= -1.0 || u >= w || v >= h) {
        for (int k = 0; k < c; ++k) o[k] = static_cast<uint8_t>(j.fill);
        return;
      }
      const int x0 = static_cast<int>(floor(u)), y0 = static_cast<int>(floor(v));
      const float fx = static_cast<float>(u - x0), fy = static_cast<float>(v - y0);
      const float fv = static_cast<float>(j.fill);
      for (int k = 0; k < c; ++k)
        o[k] = am::bilerp(warp_src(s, h, w, c, y0, x0, k, fv), warp_src(s, h, w, c, y0, x0 + 1, k, fv),
                          warp_src(s, h, w, c, y0 + 1, x0, k, fv), warp_src(s, h, w, c, y0 + 1, x0 + 1, k, fv), fx,
                          fy);
      return;
    }
    case O::AutoContrast:
    case O::Equalize:
      for (int k = 0; k < c; ++k) o[k] = j.lut[k * 256 + in[k]];
      return;
    case O::Solarize:
      for (int k = 0; k < c; ++k) o[k] = in[k] >= m.thresh ? static_cast<uint8_t>(255 - in[k]) : in[k];
      return;
    case O::SolarizeAdd:
      for (int k = 0; k < c; ++k) o[k] = in[k] < 128 ? static_cast<uint8_t>(min(255, in[k] + m.add)) : in[k];
      return;
    case O::Posterize:
      for (int k = 0; k < c; ++k) o[k] = in[k] & m.mask;
      return;
    case O::Contrast: {
      const float d = static_cast<float>(*j.mean);
      for (int k = 0; k < c; ++k) o[k] = am::blend(d, in[k], m.factor);
      return;
    }
    case O::Brightness:
      for (int k = 0; k < c; ++k) o[k] = am::blend(0.f, in[k], m.factor);
      return;
    case O::Color:
      if (c == 3) {
        const float d = am::luma(in[0], in[1], in[2]);
        for (int k = 0; k < c; ++k) o[k] = am::blend(d, in[k], m.factor);
        return;
      }
      break;              // gray: unchanged
    case O::Sharpness: {  // PIL SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, borders unchanged
      const int y = static_cast<int>(p / w), x = static_cast<int>(p % w);
      const bool interior = h >= 3 && w >= 3 && y >= 1 && y < h - 1 && x >= 1 && x < w - 1;
      for (int k = 0; k < c; ++k) {
        int d = in[k];
        if (interior) {
          int acc = 0;
          for (int dy = -1; dy <= 1; ++dy)
            for (int dx = -1; dx <= 1; ++dx)
              acc += s[(static_cast<int64_t>(y + dy) * w + (x + dx)) * c + k] * ((dx == 0 && dy == 0) ? 5 : 1);
          d = (acc + 6) / 13;
        }
        o[k] = am::blend(static_cast<float>(d), in[k], m.factor);
      }
      return;
    }
    case O::Identity: break;
  }
  for (int k = 0; k < c; ++k) o[k] = in[k];
}

// ---- stage 5: normalise, erase, mix -----------------------------------------------------------------
struct FinalJob {
  const uint8_t* img = nullptr;  // out_h x out_w x c
  int erase = 0, top = 0, left = 0, eh = 0, ew = 0;
  uint64_t noise_seed = 0;
};
struct MixParams {
  int n = 0, c = 0, h = 0, w = 0;
  int applied = 0, cutmix = 0, y0 = 0, y1 = 0, x0 = 0, x1 = 0;
  float l = 1.f, m = 0.f;  // lam and 1 - lam as floats (as the CPU's mixup)
};

__device__ inline uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// N(0, 1) for element `i` of a sample's erased rectangle: Box-Muller on two 53-bit uniforms hashed
// from (seed, i) — a pure function of its arguments (no state, no order).
__device__ inline float erase_noise(uint64_t seed, uint64_t i) {
  const uint64_t a = splitmix64(seed ^ splitmix64(2 * i)), b = splitmix64(seed ^ splitmix64(2 * i + 1));
  double u1 = static_cast<double>(a >> 11) * (1.0 / 9007199254740992.0);
  const double u2 = static_cast<double>(b >> 11) * (1.0 / 9007199254740992.0);
  if (u1 < 1e-300) u1 = 1e-300;
  return static_cast<float>(sqrt(-2.0 * log(u1)) * cospi(2.0 * u2));
}

// Sample i's normalised (and erased) value at (k, y, x).
__device__ inline float sample_value(const FinalJob& j, const float* lut, const MixParams& mp, int k, int y,
                                     int x) {
  if (j.erase && y >= j.top && y < j.top + j.eh && x >= j.left && x < j.left + j.ew)
    return erase_noise(j.noise_seed, (static_cast<uint64_t>(k) * mp.h + y) * mp.w + x);
  return lut[k * 256 + j.img[(static_cast<int64_t>(y) * mp.w + x) * mp.c + k]];
}

__global__ void finalize_kernel(const FinalJob* jobs, const float* lut, MixParams mp, float* out) {
  const int i = blockIdx.y;
  const int64_t plane = static_cast<int64_t>(mp.h) * mp.w;
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= plane * mp.c) return;
  const int k = static_cast<int>(e / plane), y = static_cast<int>((e % plane) / mp.w),
            x = static_cast<int>(e % mp.w);
  const int partner = mp.n - 1 - i;
  float v = sample_value(jobs[i], lut, mp, k, y, x);
  if (mp.applied && partner != i) {  // the middle image of an odd batch is left alone, as on the CPU
    if (mp.cutmix) {
      if (y >= mp.y0 && y < mp.y1 && x >= mp.x0 && x < mp.x1) v = sample_value(jobs[partner], lut, mp, k, y, x);
    } else {
      v = am::mix(mp.l, v, mp.m, sample_value(jobs[partner], lut, mp, k, y, x));
    }
  }
  out[static_cast<int64_t>(i) * plane * mp.c + e] = v;
}

// ---- stage 6: targets ---------------------------------------------------------------------------------
__global__ void targets_kernel(const int32_t* labels, int n, int classes, double lam, double ls, float* targets) {
  const int i = blockIdx.y, k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= classes) return;
  const int ya = labels[i], yb = labels[n - 1 - i];
  const double v = (k == ya ? lam : 0.0) + (k == yb ? 1.0 - lam : 0.0);
  targets[static_cast<int64_t>(i) * classes + k] = am::smooth_target(v, ls, ls / classes);
}

// ---- host-side staging ---------------------------------------------------------------------------------
// A byte blob of everything uploaded per batch (taps, job arrays, labels), 16-byte aligned pieces.
struct Blob {
  std::vector<uint8_t> bytes;
  size_t put(const void* p, size_t n) {
    const size_t off = (bytes.size() + 15) / 16 * 16;
    bytes.resize(off + n);
    if (n) std::memcpy(bytes.data() + off, p, n);
    return off;
  }
};

struct TapsOffsets {  // where one axis's taps lie in the blob
  size_t start = 0, count = 0, weights = 0;
  int maxk = 0;
};
TapsOffsets put_taps(Blob& b, const Taps& t) {
  return {b.put(t.start.data(), t.start.size() * sizeof(int)), b.put(t.count.data(), t.count.size() * sizeof(int)),
          b.put(t.weights.data(), t.weights.size() * sizeof(float)), t.maxk};
}
TapsOffsets put_pil_taps(Blob& b, const PilTaps& t) {
  return {b.put(t.first.data(), t.first.size() * sizeof(int)), b.put(t.count.data(), t.count.size() * sizeof(int)),
          b.put(t.k.data(), t.k.size() * sizeof(int32_t)), t.ksize};
}
DevTaps dev_taps(const uint8_t* base, const TapsOffsets& o) {
  return {reinterpret_cast<const int*>(base + o.start), reinterpret_cast<const int*>(base + o.count),
          reinterpret_cast<const float*>(base + o.weights), o.maxk};
}
DevPilTaps dev_pil_taps(const uint8_t* base, const TapsOffsets& o) {
  return {reinterpret_cast<const int*>(base + o.start), reinterpret_cast<const int*>(base + o.count),
          reinterpret_cast<const int32_t*>(base + o.weights), o.maxk};
}

unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>(std::max<int64_t>(1, (n + kThreads - 1) / kThreads));
}

}  // namespace

struct GpuAugmenter::State {
  LoaderConfig cfg;
  MixConfig mix;
  int out_c = 0, out_h = 0, out_w = 0, classes = 0, max_batch = 0;
  DeviceBuffer<float> norm_lut;   // out_c x 256
  DeviceBuffer<uint8_t> ra_lut;   // max_batch x 3 x 256
  DeviceBuffer<int> ra_mean;      // max_batch
  DeviceBuffer<uint8_t> params;   // the uploaded blob
  PinnedBuffer<uint8_t> staging;  // its host copy
  DeviceBuffer<uint8_t> pixels;   // intermediate images
  CudaEvent uploaded;             // the last blob copy finished (staging reusable)
  bool pending = false;
  // host scratch, reused
  SampleTaps scratch;  // a sample's taps when run() is not given them
  Blob blob;           // the batch's upload, assembled here
};

GpuAugmenter::GpuAugmenter(const LoaderConfig& cfg, int out_c, int out_h, int out_w, int classes, int max_batch)
    : state_(std::make_unique<State>()) {
  KAT_CHECK(out_c == 1 || out_c == 3, "GpuAugmenter: output channels must be 1 or 3, got ", out_c);
  KAT_CHECK(out_h > 0 && out_w > 0 && classes > 0 && max_batch > 0, "GpuAugmenter: bad geometry ", out_c, "x",
            out_h, "x", out_w, ", ", classes, " classes, batch ", max_batch);
  KAT_CHECK(cfg.aug.out_size == 0 || (out_h == cfg.aug.out_size && out_w == cfg.aug.out_size),
            "GpuAugmenter: output ", out_h, "x", out_w, " but the config's out_size is ", cfg.aug.out_size);
  State& s = *state_;
  s.cfg = cfg;
  s.mix = batch_mix_config(cfg);
  s.out_c = out_c;
  s.out_h = out_h;
  s.out_w = out_w;
  s.classes = classes;
  s.max_batch = max_batch;
  const std::vector<float> lut = make_norm_lut(cfg.aug, out_c);
  s.norm_lut.allocate(lut.size());
  KAT_CUDA_CHECK(cudaMemcpy(s.norm_lut.data(), lut.data(), lut.size() * sizeof(float), cudaMemcpyHostToDevice));
  s.ra_lut.allocate(static_cast<size_t>(max_batch) * 3 * 256);
  s.ra_mean.allocate(static_cast<size_t>(max_batch));
  s.uploaded = CudaEvent::create(cudaEventDisableTiming);
}

GpuAugmenter::~GpuAugmenter() = default;

void GpuAugmenter::prepare_taps(const SamplePlan& p, SampleTaps& t) const {
  const State& s = *state_;
  const int oh = s.out_h, ow = s.out_w;
  if (p.fit == SamplePlan::Fit::TrainFit) {
    const SourceBox b = shorter_side_crop_box(p.src_h, p.src_w, p.fit_size);
    make_taps(b.x0, b.w, p.src_w, p.fit_size, t.fit_x);
    make_taps(b.y0, b.h, p.src_h, p.fit_size, t.fit_y);
  } else if (p.fit == SamplePlan::Fit::EvalFit) {
    t.eval = eval_fit_geometry(p.src_h, p.src_w, p.fit_size, p.fit_crop_pct);
    pil_taps(p.src_w, t.eval.rw, t.pil_x);
    pil_taps(p.src_h, t.eval.rh, t.pil_y);
    t.tmp_row0 = t.pil_y.first[t.eval.top];
    const int last = t.eval.top + p.fit_size - 1;
    t.tmp_rows = t.pil_y.first[last] + t.pil_y.count[last] - t.tmp_row0;
  }
  const int h = p.aug_h, w = p.aug_w;
  const bool same = oh == h && ow == w;
  // The crop's resampling (identity taps where the CPU copies).
  SourceBox box{0, 0, static_cast<double>(h), static_cast<double>(w)};
  if (p.train && p.crop == SamplePlan::Crop::Rrc)
    box = {double(p.box_y), double(p.box_x), double(p.box_h), double(p.box_w)};
  else if (!same)
    box = center_crop_box(h, w, oh, ow, 1.0);
  if (!p.train && (!same || s.cfg.aug.eval_crop_pct < 1.0))
    box = center_crop_box(h, w, oh, ow, s.cfg.aug.eval_crop_pct);
  make_taps(box.x0, box.w, w, ow, t.crop_x);
  make_taps(box.y0, box.h, h, oh, t.crop_y);
}

MixResult GpuAugmenter::run(const DeviceImage* images, const SamplePlan* plans, const int32_t* labels, int n,
                            int64_t epoch, int64_t batch, float* d_images, float* d_targets, cudaStream_t stream,
                            const SampleTaps* const* taps) {
  State& s = *state_;
  KAT_CHECK(n >= 1 && n <= s.max_batch, "GpuAugmenter: batch of ", n, " images (planned for 1 .. ", s.max_batch,
            ")");
  const int oh = s.out_h, ow = s.out_w, oc = s.out_c;
  const bool train = s.cfg.aug.train;
  for (int i = 0; i < n; ++i) {
    const DeviceImage& im = images[i];
    const SamplePlan& p = plans[i];
    KAT_CHECK(im.pixels && im.h == p.src_h && im.w == p.src_w && im.c == p.channels &&
                  im.row_bytes >= int64_t(im.w) * im.c,
              "GpuAugmenter: image ", i, " of batch ", batch, " is ", im.h, "x", im.w, "x", im.c,
              im.pixels ? "" : " (no pixels)", " but its plan was drawn for ", p.src_h, "x", p.src_w, "x",
              p.channels);
    KAT_CHECK(p.aug_c == oc && p.out_h == oh && p.out_w == ow && p.train == train,
              "GpuAugmenter: the plan of image ", i, " gives ", p.aug_c, "x", p.out_h, "x", p.out_w,
              p.train ? " (train)" : " (eval)", " but the augmenter makes ", oc, "x", oh, "x", ow,
              train ? " (train)" : " (eval)");
    KAT_CHECK(p.randaug_steps >= 0 && p.randaug_steps <= kMaxRandAugSteps, "GpuAugmenter: bad plan for image ", i);
    KAT_CHECK(labels[i] >= 0 && labels[i] < s.classes, "GpuAugmenter: label ", labels[i], " of image ", i,
              " out of range [0, ", s.classes, ")");
  }
  const MixResult mix = plan_batch_mix(s.cfg, epoch, batch, n, oh, ow);

  // Intermediate images: per sample [fit | bicubic tmp | pad] then the two RandAugment buffers.
  const size_t out_bytes = static_cast<size_t>(oh) * ow * oc;
  auto align = [](size_t v) { return (v + 255) / 256 * 256; };
  struct Offsets {
    size_t fit = 0, tmp = 0, pad = 0, a = 0, b = 0;
  };
  std::vector<Offsets> off(n);
  size_t total = 0;
  Blob& blob = s.blob;  // kept between batches: its capacity is reused
  blob.bytes.clear();
  std::vector<TapsOffsets> fit_x(n), fit_y(n), crop_x(n), crop_y(n);
  std::vector<int> tmp_rows(n, 0), tmp_row0(n, 0);
  std::vector<EvalFitGeometry> eg(n);
  for (int i = 0; i < n; ++i) {
    const SamplePlan& p = plans[i];
    const SampleTaps* t = taps ? taps[i] : nullptr;
    if (!t) {  // not prepared by the caller: now, into the scratch
      prepare_taps(p, s.scratch);
      t = &s.scratch;
    }
    const bool convert_only = p.fit == SamplePlan::Fit::None && p.channels != p.aug_c;
    if (p.fit != SamplePlan::Fit::None || convert_only) {
      off[i].fit = total;
      total += align(static_cast<size_t>(p.aug_h) * p.aug_w * p.aug_c);
    }
    if (p.fit == SamplePlan::Fit::TrainFit) {
      fit_x[i] = put_taps(blob, t->fit_x);
      fit_y[i] = put_taps(blob, t->fit_y);
    } else if (p.fit == SamplePlan::Fit::EvalFit) {
      eg[i] = t->eval;
      tmp_row0[i] = t->tmp_row0;
      tmp_rows[i] = t->tmp_rows;
      fit_x[i] = put_pil_taps(blob, t->pil_x);
      fit_y[i] = put_pil_taps(blob, t->pil_y);
      off[i].tmp = total;
      total += align(static_cast<size_t>(tmp_rows[i]) * p.fit_size * p.channels);
    }
    const bool same = oh == p.aug_h && ow == p.aug_w;
    if (p.train && p.crop == SamplePlan::Crop::Pad && !same) {
      off[i].pad = total;
      total += align(static_cast<size_t>(p.aug_h) * p.aug_w * oc);
    }
    crop_x[i] = put_taps(blob, t->crop_x);
    crop_y[i] = put_taps(blob, t->crop_y);
    off[i].a = total;
    total += align(out_bytes);
    off[i].b = total;
    total += align(out_bytes);
  }
  const size_t labels_off = blob.put(labels, sizeof(int32_t) * n);
  // Job arrays (pointers patched once the device buffers are sized).
  const size_t jobs_off = blob.put(nullptr, 0);
  const size_t job_bytes = (sizeof(ResampleJob) * 2 + sizeof(BicubicJob) + sizeof(ConvertJob) + sizeof(PadJob) +
                            sizeof(RandAugJob) + sizeof(FinalJob)) *
                               n +
                           16 * 8;
  const size_t blob_bytes = jobs_off + job_bytes;
  if (s.pending) s.uploaded.synchronize();  // the previous batch's copy has left the staging buffer
  if (s.pixels.size() < total || s.params.size() < blob_bytes) {
    KAT_CUDA_CHECK(cudaStreamSynchronize(stream));  // earlier batches may still read the old buffers
    if (s.pixels.size() < total) s.pixels.allocate(total + total / 4);
    if (s.params.size() < blob_bytes) {
      s.params.allocate(blob_bytes + blob_bytes / 4);
      s.staging.allocate(s.params.size());
    }
  }
  const uint8_t* dbase = s.params.data();
  uint8_t* px = s.pixels.data();
  std::vector<ResampleJob> fit_jobs(n), crop_jobs(n);
  std::vector<BicubicJob> bic_jobs(n);
  std::vector<ConvertJob> conv_jobs(n);
  std::vector<PadJob> pad_jobs(n);
  std::vector<RandAugJob> ra_jobs(n);
  std::vector<FinalJob> fin_jobs(n);
  bool any_fit = false, any_bic = false, any_conv = false, any_pad = false;
  int max_steps = 0;
  int64_t max_fit_px = 1, max_tmp_px = 1, max_aug_px = 1;
  for (int i = 0; i < n; ++i) {
    const SamplePlan& p = plans[i];
    const DeviceImage& im = images[i];
    const int h = p.aug_h, w = p.aug_w;
    const bool same = oh == h && ow == w;
    // The augmentation's input: the fitted / converted image, or the decoded file itself.
    const uint8_t* in = im.pixels;
    int64_t in_row = im.row_bytes;
    if (p.fit == SamplePlan::Fit::TrainFit) {
      ResampleJob& j = fit_jobs[i];
      j = {im.pixels,  im.row_bytes, p.channels, px + off[i].fit,           p.fit_size,
           p.fit_size, oc,           0,          dev_taps(dbase, fit_x[i]), dev_taps(dbase, fit_y[i])};
      any_fit = true;
    } else if (p.fit == SamplePlan::Fit::EvalFit) {
      BicubicJob& j = bic_jobs[i];
      j = {im.pixels,
           im.row_bytes,
           p.channels,
           px + off[i].tmp,
           tmp_rows[i],
           tmp_row0[i],
           p.fit_size,
           eg[i].top,
           eg[i].left,
           px + off[i].fit,
           oc,
           dev_pil_taps(dbase, fit_x[i]),
           dev_pil_taps(dbase, fit_y[i])};
      any_bic = true;
      max_tmp_px = std::max<int64_t>(max_tmp_px, int64_t(tmp_rows[i]) * p.fit_size);
    } else if (p.channels != p.aug_c) {
      conv_jobs[i] = {im.pixels, im.row_bytes, p.channels, h, w, px + off[i].fit, oc};
      any_conv = true;
    }
    if (p.fit != SamplePlan::Fit::None || p.channels != p.aug_c) {
      in = px + off[i].fit;
      in_row = int64_t(w) * oc;
      max_fit_px = std::max<int64_t>(max_fit_px, int64_t(h) * w);
    }
    uint8_t* a = px + off[i].a;
    uint8_t* b = px + off[i].b;
    ResampleJob& cj = crop_jobs[i];
    cj = {in, in_row, oc, a, oh, ow, oc, 0, dev_taps(dbase, crop_x[i]), dev_taps(dbase, crop_y[i])};
    if (p.train && p.crop == SamplePlan::Crop::Pad) {
      PadJob& pj = pad_jobs[i];
      pj = {in,
            in_row,
            same ? a : px + off[i].pad,
            h,
            w,
            oc,
            s.cfg.aug.padding,
            p.pad_dy,
            p.pad_dx,
            p.flip ? 1 : 0,
            s.cfg.aug.pad_mode == "reflect" ? 1 : 0,
            s.cfg.aug.fill};
      any_pad = true;
      max_aug_px = std::max<int64_t>(max_aug_px, int64_t(h) * w);
      if (same)
        cj.dst = nullptr;  // the pad-crop is the output
      else
        cj.src = px + off[i].pad, cj.src_row = int64_t(w) * oc;  // resample the padded image (flip done)
    } else if (p.train) {
      cj.flip = p.flip ? 1 : 0;
    }
    RandAugJob& rj = ra_jobs[i];
    rj.buf[0] = a;
    rj.buf[1] = b;
    rj.h = oh;
    rj.w = ow;
    rj.c = oc;
    rj.fill = s.cfg.aug.fill;
    rj.lut = s.ra_lut.data() + size_t(i) * 3 * 256;
    rj.mean = s.ra_mean.data() + i;
    rj.steps = p.train ? p.randaug_steps : 0;
    for (int k = 0; k < rj.steps; ++k) {
      rj.applied[k] = p.randaug[k].applied ? 1 : 0;
      rj.prm[k] = randaug_params(p.randaug[k], oh, ow);
    }
    max_steps = std::max(max_steps, rj.steps);
    FinalJob& fj = fin_jobs[i];
    fj = {a, p.erase ? 1 : 0, p.erase_top, p.erase_left, p.erase_h, p.erase_w, p.noise_seed};
  }
  // Every sample runs max_steps ping-pong steps (a copy where it has no step), so all end in the
  // same buffer: a after an even count, b after an odd one.
  for (int i = 0; i < n; ++i) fin_jobs[i].img = max_steps % 2 ? ra_jobs[i].buf[1] : ra_jobs[i].buf[0];
  const size_t o_fit = blob.put(fit_jobs.data(), sizeof(ResampleJob) * n);
  const size_t o_crop = blob.put(crop_jobs.data(), sizeof(ResampleJob) * n);
  const size_t o_bic = blob.put(bic_jobs.data(), sizeof(BicubicJob) * n);
  const size_t o_conv = blob.put(conv_jobs.data(), sizeof(ConvertJob) * n);
  const size_t o_pad = blob.put(pad_jobs.data(), sizeof(PadJob) * n);
  const size_t o_ra = blob.put(ra_jobs.data(), sizeof(RandAugJob) * n);
  const size_t o_fin = blob.put(fin_jobs.data(), sizeof(FinalJob) * n);
  KAT_CHECK(blob.bytes.size() <= s.params.size(), "GpuAugmenter: parameter blob overflow (", blob.bytes.size(),
            " > ", s.params.size(), ")");
  std::memcpy(s.staging.data(), blob.bytes.data(), blob.bytes.size());
  KAT_CUDA_CHECK(
      cudaMemcpyAsync(s.params.data(), s.staging.data(), blob.bytes.size(), cudaMemcpyHostToDevice, stream));
  s.uploaded.record(stream);
  s.pending = true;

  auto job = [&](size_t o) { return dbase + o; };
  const unsigned N = static_cast<unsigned>(n);
  if (any_fit) {
    int64_t mx = 1;
    for (int i = 0; i < n; ++i)
      if (plans[i].fit == SamplePlan::Fit::TrainFit)
        mx = std::max<int64_t>(mx, int64_t(plans[i].fit_size) * plans[i].fit_size);
    resample_kernel<<<dim3(blocks_for(mx), N), kThreads, 0, stream>>>(
        reinterpret_cast<const ResampleJob*>(job(o_fit)));
    KAT_CUDA_CHECK_LAUNCH();
  }
  if (any_bic) {
    const auto* bj = reinterpret_cast<const BicubicJob*>(job(o_bic));
    bicubic_h_kernel<<<dim3(blocks_for(max_tmp_px), N), kThreads, 0, stream>>>(bj);
    KAT_CUDA_CHECK_LAUNCH();
    bicubic_v_kernel<<<dim3(blocks_for(max_fit_px), N), kThreads, 0, stream>>>(bj);
    KAT_CUDA_CHECK_LAUNCH();
  }
  if (any_conv) {
    convert_kernel<<<dim3(blocks_for(max_fit_px), N), kThreads, 0, stream>>>(
        reinterpret_cast<const ConvertJob*>(job(o_conv)));
    KAT_CUDA_CHECK_LAUNCH();
  }
  if (any_pad) {
    pad_kernel<<<dim3(blocks_for(max_aug_px), N), kThreads, 0, stream>>>(
        reinterpret_cast<const PadJob*>(job(o_pad)));
    KAT_CUDA_CHECK_LAUNCH();
  }
  const int64_t out_px = int64_t(oh) * ow;
  resample_kernel<<<dim3(blocks_for(out_px), N), kThreads, 0, stream>>>(
      reinterpret_cast<const ResampleJob*>(job(o_crop)));
  KAT_CUDA_CHECK_LAUNCH();
  const auto* rj = reinterpret_cast<const RandAugJob*>(job(o_ra));
  for (int step = 0; step < max_steps; ++step) {
    const int src = step % 2;
    randaug_prepare_kernel<<<N, kThreads, 0, stream>>>(rj, step, src);
    KAT_CUDA_CHECK_LAUNCH();
    randaug_apply_kernel<<<dim3(blocks_for(out_px), N), kThreads, 0, stream>>>(rj, step, src);
    KAT_CUDA_CHECK_LAUNCH();
  }
  MixParams mp;
  mp.n = n;
  mp.c = oc;
  mp.h = oh;
  mp.w = ow;
  mp.applied = mix.applied ? 1 : 0;
  mp.cutmix = mix.cutmix ? 1 : 0;
  mp.y0 = mix.y0;
  mp.y1 = mix.y1;
  mp.x0 = mix.x0;
  mp.x1 = mix.x1;
  mp.l = static_cast<float>(mix.lam);
  mp.m = static_cast<float>(1.0 - mix.lam);
  finalize_kernel<<<dim3(blocks_for(out_px * oc), N), kThreads, 0, stream>>>(
      reinterpret_cast<const FinalJob*>(job(o_fin)), s.norm_lut.data(), mp, d_images);
  KAT_CUDA_CHECK_LAUNCH();
  targets_kernel<<<dim3(blocks_for(s.classes), N), kThreads, 0, stream>>>(
      reinterpret_cast<const int32_t*>(job(labels_off)), n, s.classes, mix.lam, s.mix.label_smoothing, d_targets);
  KAT_CUDA_CHECK_LAUNCH();
  return mix;
}

}  // namespace kat::data::cuda
