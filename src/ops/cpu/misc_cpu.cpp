// Elementwise and small ops, CPU: exact GELU, softmax cross-entropy, patch extraction, drop-path.
#include <algorithm>
#include <cmath>

#include "ops/cpu/vec_math.h"
#include "ops/cpu_ops.h"

namespace kat::ops {

// GELU(x) = x Φ(x) = 0.5 x (1 + erf(x/√2));  GELU'(x) = Φ(x) + x φ(x).
template <typename T>
void gelu_forward(int64_t n, const T* x, T* y) {
  const T r2 = T(0.70710678118654752440);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = T(0.5) * x[i] * (T(1) + vmath::erf(x[i] * r2));
}

template <typename T>
void gelu_backward(int64_t n, const T* x, const T* dy, T* dx) {
  const T r2 = T(0.70710678118654752440), inv_sqrt_2pi = T(0.39894228040143267794);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    const T cdf = T(0.5) * (T(1) + vmath::erf(v * r2));
    const T pdf = inv_sqrt_2pi * vmath::exp(T(-0.5) * v * v);
    dx[i] = dy[i] * (cdf + v * pdf);
  }
}

template <typename T>
double softmax_xent(int64_t B, int64_t K, const T* logits, const T* target, T ls, T* dlogits,
                    T* row_loss) {
  double total = 0;
  for (int64_t b = 0; b < B; ++b) {  // B is small; sequential keeps the sum order fixed
    const T* z = logits + b * K;
    const T* t = target + b * K;
    double mx = -INFINITY;
    for (int64_t k = 0; k < K; ++k) mx = std::max<double>(mx, z[k]);
    double se = 0;
    for (int64_t k = 0; k < K; ++k) se += std::exp(static_cast<double>(z[k]) - mx);
    const double lse = mx + std::log(se);
    double l = 0;
    for (int64_t k = 0; k < K; ++k) {
      const double tk = (1.0 - ls) * t[k] + static_cast<double>(ls) / static_cast<double>(K);
      l -= tk * (static_cast<double>(z[k]) - lse);
      if (dlogits)
        dlogits[b * K + k] = static_cast<T>((std::exp(static_cast<double>(z[k]) - lse) - tk) / B);
    }
    if (row_loss) row_loss[b] = static_cast<T>(l);
    total += l;
  }
  return total / static_cast<double>(B);
}

template <typename T>
void im2col_patches(int64_t B, int64_t C, int64_t H, int64_t W, int64_t p, const T* img, T* cols) {
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

template <typename T>
void scale_rows(int64_t B, int64_t per_sample, const T* scale, const T* x, T* y) {
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    const T s = scale[b];
    for (int64_t i = 0; i < per_sample; ++i) y[b * per_sample + i] = x[b * per_sample + i] * s;
  }
}

#define KAT_INSTANTIATE(T)                                                                     \
  template void gelu_forward<T>(int64_t, const T*, T*);                                        \
  template void gelu_backward<T>(int64_t, const T*, const T*, T*);                             \
  template double softmax_xent<T>(int64_t, int64_t, const T*, const T*, T, T*, T*);            \
  template void im2col_patches<T>(int64_t, int64_t, int64_t, int64_t, int64_t, const T*, T*); \
  template void scale_rows<T>(int64_t, int64_t, const T*, const T*, T*);
KAT_INSTANTIATE(float)
KAT_INSTANTIATE(double)
#undef KAT_INSTANTIATE

}  // namespace kat::ops
