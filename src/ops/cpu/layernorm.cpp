// LayerNorm, CPU. Two-pass mean/variance per row (numerically safe), biased variance as PyTorch.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/layernorm.h"

namespace kat::ops {

template <typename T>
void layernorm_forward(int64_t rows, int64_t C, T eps, const T* x, const T* gamma, const T* beta, T* y, T* mean,
                       T* rstd) {
  check_layernorm_shape(rows, C, "layernorm_forward");
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < C; ++c) s += xr[c];
    const T mu = s / T(C);
    T v = 0;
#pragma omp simd reduction(+ : v)
    for (int64_t c = 0; c < C; ++c) v += (xr[c] - mu) * (xr[c] - mu);
    const T rs = T(1) / std::sqrt(v / T(C) + eps);
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - mu) * rs * gamma[c] + beta[c];
    mean[r] = mu;
    rstd[r] = rs;
  }
}

template <typename T>
void layernorm_backward(int64_t rows, int64_t C, const T* x, const T* gamma, const T* mean, const T* rstd,
                        const T* dy, T* dx_acc, T* dgamma, T* dbeta) {
  check_layernorm_shape(rows, C, "layernorm_backward");
  // dgamma/dbeta partials over a fixed number of row chunks (deterministic), summed in order.
  constexpr int64_t kChunks = 32;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(kChunks, rows));
  // Scratch reused across calls (grows once, no allocation in the steady state).
  thread_local std::vector<T> part;
  part.assign(static_cast<size_t>(chunks) * 2 * C, T(0));
  T* const partp = part.data();  // threads of the region below share the caller's scratch
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    T* pg = partp + ch * 2 * C;
    T* pb = pg + C;
    for (int64_t r = rows * ch / chunks; r < rows * (ch + 1) / chunks; ++r) {
      const T* xr = x + r * C;
      const T* gr = dy + r * C;
      T* dxr = dx_acc + r * C;
      const T mu = mean[r], rs = rstd[r];
      T s1 = 0, s2 = 0;  // mean(dxhat), mean(dxhat * xhat)
#pragma omp simd reduction(+ : s1, s2)
      for (int64_t c = 0; c < C; ++c) {
        const T xh = (xr[c] - mu) * rs, dxh = gr[c] * gamma[c];
        s1 += dxh;
        s2 += dxh * xh;
        pg[c] += gr[c] * xh;
        pb[c] += gr[c];
      }
      s1 /= T(C);
      s2 /= T(C);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const T xh = (xr[c] - mu) * rs;
        dxr[c] += rs * (gr[c] * gamma[c] - s1 - xh * s2);
      }
    }
  }
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const T* pg = part.data() + ch * 2 * C;
    for (int64_t c = 0; c < C; ++c) {
      dgamma[c] += pg[c];
      dbeta[c] += pg[C + c];
    }
  }
}

template void layernorm_forward<float>(int64_t, int64_t, float, const float*, const float*, const float*, float*,
                                       float*, float*);
template void layernorm_forward<double>(int64_t, int64_t, double, const double*, const double*, const double*,
                                        double*, double*, double*);
template void layernorm_backward<float>(int64_t, int64_t, const float*, const float*, const float*, const float*,
                                        const float*, float*, float*, float*);
template void layernorm_backward<double>(int64_t, int64_t, const double*, const double*, const double*,
                                         const double*, const double*, double*, double*, double*);

}  // namespace kat::ops
