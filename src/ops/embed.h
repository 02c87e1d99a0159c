// Patch embedding and token assembly, the op family's contract for both backends (CPU:
// ops/cpu/embed.h and the token functions of model/kat_model.cpp, CUDA: ops/cuda/embed.h; tested
// through the whole-model checks, tests/gpu/test_model_cuda.cu, and tests/test_model.cpp):
//   im2col:   img (B, C, H, W) -> cols (B, (H/p)(W/p), C p p), column order (c, kh, kw) = Conv2d
//             weight order, so the patch projection is one GEMM.
//   tokens:   x (B, N, D) = [cls ; patches (B, N-1, D)] + pos (N, D)
//   tokens backward: dcls (D) += Σ_b dx[b, 0];  dpos (N, D) += Σ_b dx[b];  dpatches = dx[:, 1:]
#pragma once
#include <cstdint>

#include "kat/core/error.h"

namespace kat::ops {

// Shape checks shared by both backends.
inline void check_patch_shape(int64_t B, int64_t C, int64_t H, int64_t W, int64_t p, const char* where) {
  KAT_CHECK(B >= 0 && C >= 1, where, ": bad image batch (B, C) = (", B, ", ", C, ")");
  KAT_CHECK(p > 0 && H % p == 0 && W % p == 0, where, ": image ", H, "x", W, " not divisible by patch ", p);
}
inline void check_tokens_shape(int64_t B, int64_t N, int64_t D, const char* where) {
  KAT_CHECK(B >= 0 && N >= 1 && D >= 1, where, ": bad token shape (B, N, D) = (", B, ", ", N, ", ", D,
            "): N counts the class token");
}

}  // namespace kat::ops
