// Patch-embedding glue of the transformer on CUDA (the parts around the patch GEMM). Contract and
// shared shape checks: ops/embed.h; CPU: ops/cpu/embed.h and the token assembly in
// model/kat_model.cpp:
//   im2col:   img (B, C, H, W) fp32  ->  cols (B, (H/p)(W/p), C p p) storage st, column order
//             (c, kh, kw) = Conv2d weight order (kat::ops::im2col_patches).
//   tokens:   x (B, N, D) = [cls ; patches (B, N-1, D)] + pos (N, D)      (cls, pos fp32)
//   tokens backward: dcls (D) += sum_b dx[b, 0];  dpos (N, D) += sum_b dx[b];  (fixed order over b)
//                    dpatches (B, N-1, D) = dx[b, 1:]                       (overwritten)
// Plus fp32 -> bf16 conversion of a flat buffer (the bf16 working copy of the weights).
#pragma once
#include <cstdint>

#include "ops/cuda/stream.h"
#include "ops/embed.h"

namespace kat::cuda {

// Images stored as img_dtype: fp32, or bf16 when dtype is bf16 (the model rounds its input to
// bf16 anyway, so a bf16 upload moves half the bytes for bitwise the same columns).
struct Im2colArgs {
  int64_t B = 0, C = 0, H = 0, W = 0;
  int64_t patch = 0;             // p: H and W multiples of it
  const void* img = nullptr;     // (B, C, H, W)
  DType img_dtype = DType::F32;  // of img
  DType dtype = DType::F32;      // of cols
  void* cols = nullptr;          // (B, (H/p)(W/p), C p p), overwritten
};
void im2col_patches(const Im2colArgs& a, cudaStream_t stream);

struct TokensForwardArgs {
  int64_t B = 0, N = 0, D = 0;
  DType dtype = DType::F32;       // of patches and x
  const void* patches = nullptr;  // (B, N-1, D)
  const float* cls = nullptr;     // (D)
  const float* pos = nullptr;     // (N, D)
  void* x = nullptr;              // (B, N, D), overwritten
};
void tokens_forward(const TokensForwardArgs& a, cudaStream_t stream);

struct TokensBackwardArgs {
  int64_t B = 0, N = 0, D = 0;
  DType dtype = DType::F32;  // of dx and dpatches
  const void* dx = nullptr;  // (B, N, D)
  float* dcls = nullptr;     // (D), +=
  float* dpos = nullptr;     // (N, D), +=
  void* dpatches = nullptr;  // (B, N-1, D), overwritten
};
void tokens_backward(const TokensBackwardArgs& a, cudaStream_t stream);

// dst[i] = bf16(src[i]) (round to nearest even), n elements.
void convert_f32_to_bf16(int64_t n, const float* src, void* dst, cudaStream_t stream);

}  // namespace kat::cuda
