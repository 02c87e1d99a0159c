// FP8 quantisation on CUDA: the amax, the scale and the cast kernels of the FP8 linear layers.
// The recipe (which tensors, which format, delayed or current scaling, power-of-two scales, the
// amax history): ops/fp8.h; the formats and the host encoder these kernels match bit for bit:
// core/fp8.h; the FP8 GEMMs that consume the casts: ops/cuda/gemm_fp8.h. Conventions:
// ops/cuda/stream.h (one parameter struct per call, everything enqueued on `stream`, nothing
// synchronises, bad arguments throw kat::Error).
//
// Scales live in DEVICE memory (one fp32 per tensor): the scale kernel writes them from amaxes the
// GPU recorded, the cast kernels and the GEMMs read them, and the host never waits for a value.
//
// Amax: max |x| over a tensor. Computed per thread and per block, then merged across blocks with an
// integer atomicMax on the fp32 bit patterns: for non-negative floats the unsigned order of the
// bits is the numeric order, and a maximum is independent of the order in which it is taken, so the
// result is bitwise deterministic (the one atomic of the CUDA ops; no float atomics). The output is
// zeroed first on `stream` (cudaMemsetAsync). NaNs are skipped and an infinity gives infinity, as
// the CPU reference's ops::fp8_amax (a NaN stays NaN through the cast, so the loss check reports
// it; an infinite amax gives scale 1).
//
// Cast: q = encode(x * scale) with __nv_cvt_float2_to_fp8x2(..., __NV_SATFINITE, ...) (round to
// nearest even, saturating to the largest finite code; core/fp8.h's float_to_fp8 gives the same
// bytes). x * scale is one fp32 multiply by a power of two, exact away from fp32's limits, so the
// CPU reference quantises to the same bytes. Optionally in the same pass:
//  - q_t, the TRANSPOSED codes (cols, ld_t): Hopper's FP8 tensor-core GEMMs take both operands
//    K-major ("TN"), so the backward GEMMs need x and dy with the token dimension contiguous
//    (ops/cuda/gemm_fp8.h). ld_t >= rows is a multiple of 16 (the GEMM's leading-dimension
//    requirement); the columns rows..ld_t-1 of q_t are written as zeros (+0 codes), so a GEMM that
//    reduces over ld_t instead of rows adds exact zeros. q and q_t are the same bytes (q_t is
//    transposed from the codes, not re-encoded).
//  - amax: max |x| of the input (unscaled), for the delayed-scaling history (ops/fp8.h): the
//    kernel that quantises x or dy records the amax the next passes' scale is computed from.
#pragma once
#include <cstdint>

#include "kat/core/fp8.h"
#include "ops/cuda/stream.h"

namespace kat::cuda {

// Row length of a transposed cast for `rows` rows: rows rounded up to a multiple of 16.
inline constexpr int64_t fp8_padded_rows(int64_t rows) { return (rows + 15) / 16 * 16; }

// amax[0] = max |x| over n elements of x (F32 or BF16). n = 0 writes 0.
struct Fp8AmaxArgs {
  int64_t n = 0;
  DType dtype = DType::BF16;
  const void* x = nullptr;  // (n)
  float* amax = nullptr;    // (1) device, overwritten
};
void fp8_amax(const Fp8AmaxArgs& a, cudaStream_t stream);

// The scales of `count` tensors of one format (ops/fp8.h: fp8_scale_for_amax over the delayed or
// current amax), one thread per tensor. Tensor i uses entry i * stride of every array (stride 2
// with the checkpoint's slot order x, dy, x, dy, ... picks the x or the dy slots of
// ops::Fp8Slot). For tensor i:
//   history given, history_length > 0 and seen[i] > 0: the largest of its last
//     min(seen, history_length) recorded amaxes (NaN entries ignored, as Fp8AmaxHistory::max_amax);
//   otherwise amax[i] (current scaling, or the first pass of delayed scaling).
// scale[i] = 2^e, scale_inv[i] = 2^-e (both exact).
struct Fp8ScaleArgs {
  int count = 1;
  int64_t stride = 1;
  Fp8Format format = Fp8Format::E4M3;
  int margin = 0;                  // Fp8Recipe::margin
  const float* amax = nullptr;     // required: the current amaxes (read only when there is no history)
  const float* history = nullptr;  // (slots, history_length) rings as ops::Fp8AmaxHistory::amax, or null
  const int64_t* seen = nullptr;   // (slots) passes recorded per slot (required with history)
  int history_length = 0;          // 0: current scaling
  float* scale = nullptr;          // written
  float* scale_inv = nullptr;      // written (may be null)
};
void fp8_scale_update(const Fp8ScaleArgs& a, cudaStream_t stream);

// Appends amax[i * stride] to slot i*stride's ring (entry seen % history_length) and increments
// seen, for `count` slots: ops::Fp8AmaxHistory::record on the device. history_length 0: no-op.
struct Fp8AmaxRecordArgs {
  int count = 1;
  int64_t stride = 1;
  const float* amax = nullptr;
  float* history = nullptr;  // (slots, history_length)
  int64_t* seen = nullptr;   // (slots)
  int history_length = 0;
};
void fp8_amax_record(const Fp8AmaxRecordArgs& a, cudaStream_t stream);

// q = encode(x * scale[0]) of x (rows, cols), F32 or BF16; q and/or q_t, amax optional (see the
// top of this file). Requirements: with q_t, cols % 16 == 0, ld_t % 16 == 0, ld_t >= rows, and
// x, q, q_t 16-byte aligned (what the FP8 GEMMs need anyway); without q_t any shape and any
// element-aligned pointers (a 16-byte vector path when aligned, a scalar path otherwise).
struct Fp8CastArgs {
  int64_t rows = 0, cols = 0;
  DType dtype = DType::BF16;
  const void* x = nullptr;  // (rows, cols)
  Fp8Format format = Fp8Format::E4M3;
  const float* scale = nullptr;  // (1) device
  uint8_t* q = nullptr;          // (rows, cols) codes, or null
  uint8_t* q_t = nullptr;        // (cols, ld_t) codes, or null
  int64_t ld_t = 0;              // row length of q_t; 0: fp8_padded_rows(rows)
  float* amax = nullptr;         // (1) device, overwritten with max |x|, or null
};
void fp8_cast(const Fp8CastArgs& a, cudaStream_t stream);

}  // namespace kat::cuda
