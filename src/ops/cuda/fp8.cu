// FP8 amax, scale and cast kernels (see fp8.h).
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kat/core/error.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/fp8.h"
#include "ops/cuda/launch.cuh"
#include "ops/cuda/vec_io.cuh"

namespace kat::cuda {

namespace {

using detail::launch;
using vecio::griddep_launch_dependents;
using vecio::griddep_wait;

constexpr int kThreads = 256;  // elementwise cast / amax
// Cast + transpose: a tile of 64 input rows x 128 input columns per block of 4 warps. Phase 1: the
// block reads the tile as 16-byte vectors (8 bf16) along rows, encodes, writes q and the codes into
// shared memory; phase 2: warp w transposes input rows 16w..16w+15, lane l input columns
// 4l..4l+3, i.e. writes 4 rows of q_t, 16 bytes each.
constexpr int kTileRows = 64, kTileCols = 128, kTileThreads = 128;
static_assert(kTileThreads / 32 * 16 == kTileRows && kTileCols / 4 == 32, "phase 2: one warp per 16 rows");

// |v| as its fp32 bit pattern, 0 for a NaN (skipped, as ops::fp8_amax on the CPU): for
// non-negative floats the unsigned order of the bits is the numeric order (infinity included).
__device__ __forceinline__ uint32_t abs_bits(float v) {
  const uint32_t a = __float_as_uint(v) & 0x7fffffffu;
  return a > 0x7f800000u ? 0u : a;
}

// The block's maximum of v merged into *out (zeroed before the kernel) with one integer atomicMax
// per block: order-independent, hence deterministic. Every thread of the block must call it.
__device__ __forceinline__ void block_max_to(uint32_t v, float* out) {
  __shared__ uint32_t warp_max[32];
  v = __reduce_max_sync(0xffffffffu, v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_max[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int warps = (blockDim.x + 31) >> 5;
    uint32_t m = lane < warps ? warp_max[lane] : 0u;
    m = __reduce_max_sync(0xffffffffu, m);
    if (lane == 0 && m != 0u) atomicMax(reinterpret_cast<unsigned int*>(out), m);
  }
}

template <Fp8Format F>
constexpr __nv_fp8_interpretation_t interp() {
  return F == Fp8Format::E4M3 ? __NV_E4M3 : __NV_E5M2;
}
// Two values -> two codes (a in the low byte, i.e. first in memory). The hardware conversion
// (cvt.rn.satfinite.{e4m3,e5m2}x2.f32 on sm_89+): round to nearest even, saturating.
template <Fp8Format F>
__device__ __forceinline__ uint32_t cvt2(float a, float b) {
  return __nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, interp<F>());
}
template <Fp8Format F>
__device__ __forceinline__ uint8_t cvt1(float a) {
  return __nv_cvt_float_to_fp8(a, __NV_SATFINITE, interp<F>());
}
// Codes of v[0..7] * s, v[j] in byte j (memory order).
template <Fp8Format F>
__device__ __forceinline__ uint2 cvt8(const float (&v)[8], float s) {
  const uint32_t c01 = cvt2<F>(v[0] * s, v[1] * s), c23 = cvt2<F>(v[2] * s, v[3] * s);
  const uint32_t c45 = cvt2<F>(v[4] * s, v[5] * s), c67 = cvt2<F>(v[6] * s, v[7] * s);
  return make_uint2(c01 | (c23 << 16), c45 | (c67 << 16));
}

// Eight consecutive elements from element offset i (16-byte aligned for bf16, 32 for fp32).
template <DType S>
__device__ __forceinline__ void load8(const void* x, int64_t i, float (&v)[8]) {
  if constexpr (S == DType::BF16) {
    const uint4 u = *reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(x) + i);
    vecio::unpack<DType::BF16, 8>(u, v);
  } else {
    const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(x) + i);
    const float4 a = p[0], b = p[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  }
}
template <DType S>
__device__ __forceinline__ float load1(const void* x, int64_t i) {
  if constexpr (S == DType::BF16)
    return vecio::ld_f(static_cast<const __nv_bfloat16*>(x) + i);
  else
    return static_cast<const float*>(x)[i];
}

// Elementwise cast of n values (VEC = 8: n % 8 == 0, x 16-byte and q 8-byte aligned; VEC = 1:
// anything), optional amax; q == null: amax only (the scale is not read).
template <DType S, int VEC, Fp8Format F>
__global__ void __launch_bounds__(kThreads)
    cast_kernel(int64_t n, const void* x, const float* scale, uint8_t* q, float* amax) {
  griddep_wait();
  griddep_launch_dependents();
  const float s = q != nullptr ? *scale : 1.0f;
  uint32_t m = 0;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n / VEC; i += step) {
    if constexpr (VEC == 8) {
      float v[8];
      load8<S>(x, i * 8, v);
#pragma unroll
      for (int j = 0; j < 8; ++j) m = max(m, abs_bits(v[j]));
      if (q != nullptr) *reinterpret_cast<uint2*>(q + i * 8) = cvt8<F>(v, s);
    } else {
      const float v = load1<S>(x, i);
      m = max(m, abs_bits(v));
      if (q != nullptr) q[i] = cvt1<F>(v * s);
    }
  }
  if (amax != nullptr) block_max_to(m, amax);
}

// Cast + transpose of x (rows, cols): q (rows, cols) if not null, q_t (cols, ld_t) with zero
// columns rows..ld_t-1, amax if not null. cols % 16 == 0, ld_t % 16 == 0, pointers 16-byte aligned.
// Grid: (ceil(ld_t / 64), ceil(cols / 128)).
template <DType S, Fp8Format F>
__global__ void __launch_bounds__(kTileThreads)
    cast_transpose_kernel(int64_t rows, int64_t cols, int64_t ld_t, const void* x, const float* scale, uint8_t* q,
                          uint8_t* q_t, float* amax) {
  // Codes of the tile, row-major: byte c % 4 of tile[r][c / 4] is input (r0 + r, c0 + c). Rows past
  // `rows` hold +0 codes (the zero padding of q_t).
  __shared__ __align__(16) uint32_t tile[kTileRows][kTileCols / 4];
  griddep_wait();
  griddep_launch_dependents();
  const float s = *scale;
  const int64_t r0 = int64_t(blockIdx.x) * kTileRows, c0 = int64_t(blockIdx.y) * kTileCols;
  uint32_t m = 0;
  for (int v = threadIdx.x; v < kTileRows * (kTileCols / 8); v += kTileThreads) {
    const int r = v / (kTileCols / 8), c8 = v % (kTileCols / 8);
    const int64_t gr = r0 + r, gc = c0 + c8 * 8;
    uint2 codes = make_uint2(0u, 0u);
    if (gr < rows && gc < cols) {
      float f[8];
      load8<S>(x, gr * cols + gc, f);
#pragma unroll
      for (int j = 0; j < 8; ++j) m = max(m, abs_bits(f[j]));
      codes = cvt8<F>(f, s);
      if (q != nullptr) *reinterpret_cast<uint2*>(q + gr * cols + gc) = codes;
    }
    *reinterpret_cast<uint2*>(&tile[r][c8 * 2]) = codes;
  }
  __syncthreads();
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t out_col = r0 + w * 16;    // first column of q_t written (input row)
  const int64_t out_row = c0 + lane * 4;  // first of the 4 rows of q_t written (input column)
  if (out_col < ld_t && out_row < cols) {
    uint32_t wd[16];  // wd[i]: codes of input row 16w + i, input columns 4 lane .. 4 lane + 3
#pragma unroll
    for (int i = 0; i < 16; ++i) wd[i] = tile[w * 16 + i][lane];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      // Row j of the 4: byte i = byte j of wd[i].
      const uint32_t sel = static_cast<uint32_t>(j) | (static_cast<uint32_t>(j + 4) << 4);
      uint32_t o[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const uint32_t lo = __byte_perm(wd[4 * k], wd[4 * k + 1], sel);
        const uint32_t hi = __byte_perm(wd[4 * k + 2], wd[4 * k + 3], sel);
        o[k] = __byte_perm(lo, hi, 0x5410);
      }
      *reinterpret_cast<uint4*>(q_t + (out_row + j) * ld_t + out_col) = make_uint4(o[0], o[1], o[2], o[3]);
    }
  }
  if (amax != nullptr) block_max_to(m, amax);
}

// ops::fp8_scale_for_amax's exponent, the same integer steps in fp32 (ilogbf / ldexpf are exact).
__device__ int scale_exponent(float amax, float max_finite, int margin) {
  if (!(amax > 0.0f) || !isfinite(amax)) return 0;
  int e = ilogbf(max_finite) - ilogbf(amax);
  if (ldexpf(amax, e) > max_finite) --e;
  return min(max(e - margin, -120), 120);
}

__global__ void scale_kernel(Fp8ScaleArgs a, float max_finite) {
  griddep_wait();
  griddep_launch_dependents();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= a.count) return;
  const int64_t slot = int64_t(i) * a.stride;
  const int64_t seen = a.history != nullptr && a.history_length > 0 ? a.seen[slot] : 0;
  float m;
  if (seen > 0) {
    // As Fp8AmaxHistory::max_amax: m = std::max(m, v) from 0, which skips NaN entries.
    const int64_t n = min(seen, int64_t(a.history_length));
    const float* h = a.history + slot * a.history_length;
    m = 0.0f;
    for (int64_t k = 0; k < n; ++k) m = m < h[k] ? h[k] : m;
  } else {
    m = a.amax[slot];
  }
  const int e = scale_exponent(m, max_finite, a.margin);
  a.scale[slot] = ldexpf(1.0f, e);
  if (a.scale_inv != nullptr) a.scale_inv[slot] = ldexpf(1.0f, -e);
}

__global__ void record_kernel(Fp8AmaxRecordArgs a) {
  griddep_wait();
  griddep_launch_dependents();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= a.count) return;
  const int64_t slot = int64_t(i) * a.stride;
  const int64_t seen = a.seen[slot];
  a.history[slot * a.history_length + seen % a.history_length] = a.amax[slot];
  a.seen[slot] = seen + 1;
}

template <typename Fn>
void dispatch_format(Fp8Format f, Fn&& fn) {
  if (f == Fp8Format::E4M3)
    fn(std::integral_constant<Fp8Format, Fp8Format::E4M3>{});
  else
    fn(std::integral_constant<Fp8Format, Fp8Format::E5M2>{});
}

// Elementwise cast (or amax only when q is null) of n values.
void launch_cast(int64_t n, DType dt, const void* x, Fp8Format f, const float* scale, uint8_t* q, float* amax,
                 cudaStream_t stream) {
  const bool vec = n % 8 == 0 && detail::al16(x) && detail::al(q, 8);
  detail::dispatch_dtype_vec(dt, vec, [&](auto s, auto /*vec width of the dtype*/) {
    constexpr DType S = decltype(s)::value;
    dispatch_format(f, [&](auto fmt) {
      constexpr Fp8Format F = decltype(fmt)::value;
      const int64_t items = vec ? n / 8 : n;
      const dim3 grid(detail::grid_for(items, kThreads, int64_t(detail::sm_count()) * 8));
      if (vec)
        launch(cast_kernel<S, 8, F>, grid, kThreads, 0, stream, n, x, scale, q, amax);
      else
        launch(cast_kernel<S, 1, F>, grid, kThreads, 0, stream, n, x, scale, q, amax);
    });
  });
}

}  // namespace

void fp8_amax(const Fp8AmaxArgs& a, cudaStream_t stream) {
  detail::check_dtype(a.dtype, "fp8_amax");
  KAT_CHECK(a.n >= 0, "fp8_amax: n = ", a.n);
  KAT_CHECK(a.amax != nullptr && (a.n == 0 || a.x != nullptr), "fp8_amax: null pointer");
  KAT_CUDA_CHECK(cudaMemsetAsync(a.amax, 0, sizeof(float), stream));
  if (a.n == 0) return;
  launch_cast(a.n, a.dtype, a.x, Fp8Format::E4M3, nullptr, nullptr, a.amax, stream);
}

void fp8_scale_update(const Fp8ScaleArgs& a, cudaStream_t stream) {
  KAT_CHECK(a.count >= 0 && a.stride >= 1 && a.history_length >= 0, "fp8_scale_update: bad count ", a.count,
            ", stride ", a.stride, " or history length ", a.history_length);
  if (a.count == 0) return;
  KAT_CHECK(a.amax != nullptr && a.scale != nullptr, "fp8_scale_update: amax and scale are required");
  KAT_CHECK(a.history == nullptr || a.history_length == 0 || a.seen != nullptr,
            "fp8_scale_update: a history needs its seen counts");
  const int threads = 128;
  launch(scale_kernel, dim3(unsigned((a.count + threads - 1) / threads)), threads, 0, stream, a,
         fp8_traits(a.format).max_finite);
}

void fp8_amax_record(const Fp8AmaxRecordArgs& a, cudaStream_t stream) {
  KAT_CHECK(a.count >= 0 && a.stride >= 1 && a.history_length >= 0, "fp8_amax_record: bad count ", a.count,
            ", stride ", a.stride, " or history length ", a.history_length);
  if (a.count == 0 || a.history_length == 0) return;
  KAT_CHECK(a.amax != nullptr && a.history != nullptr && a.seen != nullptr, "fp8_amax_record: null pointer");
  const int threads = 128;
  launch(record_kernel, dim3(unsigned((a.count + threads - 1) / threads)), threads, 0, stream, a);
}

void fp8_cast(const Fp8CastArgs& a, cudaStream_t stream) {
  detail::check_dtype(a.dtype, "fp8_cast");
  KAT_CHECK(a.rows >= 0 && a.cols >= 0, "fp8_cast: bad shape (", a.rows, ", ", a.cols, ")");
  KAT_CHECK(a.q != nullptr || a.q_t != nullptr, "fp8_cast: neither q nor q_t given (amax alone: fp8_amax)");
  const int64_t ld_t = a.ld_t > 0 ? a.ld_t : fp8_padded_rows(a.rows);
  if (a.q_t != nullptr) {
    KAT_CHECK(a.cols % 16 == 0 && ld_t % 16 == 0 && ld_t >= a.rows, "fp8_cast: the transposed cast needs cols (",
              a.cols, ") and ld_t (", ld_t, ") multiples of 16 and ld_t >= rows (", a.rows, ")");
    KAT_CHECK(detail::al16(a.x) && detail::al(a.q, 16) && detail::al16(a.q_t),
              "fp8_cast: the transposed cast needs 16-byte aligned x, q and q_t");
    KAT_CHECK(a.cols / kTileCols < 65535, "fp8_cast: cols = ", a.cols, " is too large for the transposed cast");
  }
  if (a.amax != nullptr) KAT_CUDA_CHECK(cudaMemsetAsync(a.amax, 0, sizeof(float), stream));
  const bool empty = a.cols == 0 || (a.rows == 0 && (a.q_t == nullptr || ld_t == 0));
  if (empty) return;
  KAT_CHECK(a.x != nullptr && a.scale != nullptr, "fp8_cast: null x or scale");
  if (a.q_t == nullptr) {
    launch_cast(a.rows * a.cols, a.dtype, a.x, a.format, a.scale, a.q, a.amax, stream);
    return;
  }
  const dim3 grid(unsigned((ld_t + kTileRows - 1) / kTileRows), unsigned((a.cols + kTileCols - 1) / kTileCols));
  detail::dispatch_dtype_vec(a.dtype, true, [&](auto s, auto) {
    constexpr DType S = decltype(s)::value;
    dispatch_format(a.format, [&](auto fmt) {
      constexpr Fp8Format F = decltype(fmt)::value;
      launch(cast_transpose_kernel<S, F>, grid, kTileThreads, 0, stream, a.rows, a.cols, ld_t, a.x, a.scale, a.q,
             a.q_t, a.amax);
    });
  });
}

}  // namespace kat::cuda
