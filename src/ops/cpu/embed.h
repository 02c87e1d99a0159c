// Patch embedding glue on the CPU. Contract and shared shape checks: ops/embed.h; CUDA (plus the
// token assembly and the bf16 weight copy): ops/cuda/embed.h.
#pragma once
#include <cstdint>

#include "ops/embed.h"

namespace kat::ops {

// Patch extraction (conv with kernel = stride = p as a GEMM):
// img (B, C, H, W) -> cols (B, (H/p)*(W/p), C*p*p), column order (c, kh, kw) = Conv2d weight order.
template <typename T>
void im2col_patches(int64_t B, int64_t C, int64_t H, int64_t W, int64_t p, const T* img, T* cols);

}  // namespace kat::ops
