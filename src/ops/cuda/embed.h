// Patch-embedding glue of the transformer on CUDA (the parts around the patch GEMM), same
// contracts as the CPU (ops/cpu/embed.h, and the token assembly in model/kat_model.cpp):
//   im2col:   img (B, C, H, W) fp32  ->  cols (B, (H/p)(W/p), C p p) storage st, column order
//             (c, kh, kw) = Conv2d weight order (kat::ops::im2col_patches).
//   tokens:   x (B, N, D) = [cls ; patches (B, N-1, D)] + pos (N, D)      (cls, pos fp32)
//   tokens backward: dcls (D) += sum_b dx[b, 0];  dpos (N, D) += sum_b dx[b];  (fixed order over b)
//                    dpatches (B, N-1, D) = dx[b, 1:]                       (overwritten)
// Plus fp32 -> bf16 conversion of a flat buffer (the bf16 working copy of the weights).
#pragma once
#include <cstdint>

#include "ops/cuda/stream.h"

namespace kat::cuda {

void im2col_patches(int64_t B, int64_t C, int64_t H, int64_t W, int64_t p, const float* img,
                    DType st, void* cols, cudaStream_t stream);
// The same from images stored as img_st: fp32, or bf16 when st is bf16 (the model rounds its input
// to bf16 anyway, so a bf16 upload moves half the bytes for bitwise the same columns).
void im2col_patches(int64_t B, int64_t C, int64_t H, int64_t W, int64_t p, const void* img, DType img_st,
                    DType st, void* cols, cudaStream_t stream);

void tokens_forward(int64_t B, int64_t N, int64_t D, DType st, const void* patches,
                    const float* cls, const float* pos, void* x, cudaStream_t stream);

void tokens_backward(int64_t B, int64_t N, int64_t D, DType st, const void* dx, float* dcls,
                     float* dpos, void* dpatches, cudaStream_t stream);

// dst[i] = bf16(src[i]) (round to nearest even), n elements.
void convert_f32_to_bf16(int64_t n, const float* src, void* dst, cudaStream_t stream);

}  // namespace kat::cuda
