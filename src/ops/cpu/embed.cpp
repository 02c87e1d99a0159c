// Patch extraction on the CPU. Contract: ops/cpu/embed.h.
#include "ops/cpu/embed.h"

#include <algorithm>

namespace kat::ops {

template <typename T>
void im2col_patches(int64_t B, int64_t C, int64_t H, int64_t W, int64_t p, const T* img, T* cols) {
  check_patch_shape(B, C, H, W, p, "im2col_patches");
  const int64_t ph = H / p, pw = W / p, P = ph * pw, K = C * p * p;
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < P; ++t) {
      const int64_t py = t / pw, px = t % pw;
      T* row = cols + (b * P + t) * K;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t ky = 0; ky < p; ++ky) {
          const T* src = img + ((b * C + c) * H + py * p + ky) * W + px * p;
          std::copy(src, src + p, row + (c * p + ky) * p);
        }
    }
}

template void im2col_patches<float>(int64_t, int64_t, int64_t, int64_t, int64_t, const float*, float*);
template void im2col_patches<double>(int64_t, int64_t, int64_t, int64_t, int64_t, const double*, double*);

}  // namespace kat::ops
