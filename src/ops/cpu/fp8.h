// FP8 on the CPU: the reference of every FP8 op of the recipe (ops/fp8.h) and the CPU engine's
// emulation of --precision fp8: tensors are rounded to their exact FP8 values (core/fp8.h: the bytes
// a CUDA kernel writes with __NV_SATFINITE) and multiplied in fp32. CUDA: ops/cuda/fp8.h (amax,
// quantise) and ops/cuda/gemm_fp8.h (cuBLASLt FP8 GEMMs).
//
// Float only (FP8 is a storage format of fp32 training; the double instantiations of the other CPU
// ops are for finite differences, which a rounding op has none of). Conventions otherwise as
// ops/cpu/gemm.h: raw row-major buffers, dx overwritten unless accumulate_dx, dW / db accumulated,
// results independent of the thread count. A scale s multiplies before encoding and divides after
// decoding; the recipe's scales are powers of two (fp8_scale_for_amax), so both are exact and
// q(x)/s is exactly an FP8 value over s.
#pragma once
#include <cstdint>

#include "kat/core/fp8.h"

namespace kat::ops {

// max |x[i]| over n values (0 for n = 0). NaNs are skipped (they stay NaN through quantisation, so
// the loss check reports them); an infinity gives infinity (fp8_scale_for_amax then returns 1).
float fp8_amax(int64_t n, const float* x);

// q (n) = encode(x * s) in format f (round to nearest even, saturating): the bytes of the CUDA kernels.
void fp8_quantize(int64_t n, const float* x, float s, Fp8Format f, uint8_t* q);
// y (n) = decode(q) / s.
void fp8_dequantize(int64_t n, const uint8_t* q, float s, Fp8Format f, float* y);
// y (n) = decode(encode(x * s)) / s without the bytes (the emulation's one pass; bitwise equal to
// fp8_quantize + fp8_dequantize). y may alias x.
void fp8_fake_quantize(int64_t n, const float* x, float s, Fp8Format f, float* y);

// The FP8 linear layer of the recipe (ops/fp8.h), shapes as ops::linear_forward:
//   xq (rows, in) = q(x)/s_x, wq (out, in) = q(W)/s_w (E4M3; xq may alias x, wq may alias W)
//   y (rows, out) = xq · wq^T + b, summed in fp32 (ops::gemm); b (out) may be null.
void linear_forward_fp8(int64_t rows, int64_t in, int64_t out, const float* x, const float* W, const float* b,
                        float s_x, float s_w, float* xq, float* wq, float* y);
// With xq, wq of the forward (not requantised, as the recipe says) and dy (rows, out):
//   db (out) += Σ_rows dy, over the unquantised dy in fp32 (a column sum, no GEMM; may be null)
//   dyq (rows, out) = q(dy)/s_dy (E5M2; may alias dy: db is taken first)
//   dx (rows, in) = dyq · wq (overwritten, or accumulated when accumulate_dx; may be null)
//   dW (out, in) += dyq^T · xq (may be null)
void linear_backward_fp8(int64_t rows, int64_t in, int64_t out, const float* xq, const float* wq, const float* dy,
                         float s_dy, float* dyq, float* dx, float* dW, float* db, bool accumulate_dx = false);

}  // namespace kat::ops
