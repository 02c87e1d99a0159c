// Elementwise ops on the CPU: exact GELU, drop-path scaling. Contract: ops/cpu/elementwise.h.
#include <algorithm>
#include <cmath>

#include "ops/cpu/elementwise.h"
#include "ops/cpu/vec_math.h"

namespace kat::ops {

// GELU(x) = x Φ(x) = 0.5 x (1 + erf(x/√2));  GELU'(x) = Φ(x) + x φ(x).
template <typename T>
void gelu_forward(int64_t n, const T* x, T* y) {
  check_elementwise_count(n, "gelu_forward");
  const T r2 = T(0.70710678118654752440);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = T(0.5) * x[i] * (T(1) + vmath::erf(x[i] * r2));
}

template <typename T>
void gelu_backward(int64_t n, const T* x, const T* dy, T* dx) {
  check_elementwise_count(n, "gelu_backward");
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
void scale_rows(int64_t B, int64_t per_sample, const T* scale, const T* x, T* y) {
  check_rows_shape(B, per_sample, "scale_rows");
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    const T s = scale[b];
    for (int64_t i = 0; i < per_sample; ++i) y[b * per_sample + i] = x[b * per_sample + i] * s;
  }
}

#define KAT_INSTANTIATE(T)                                         \
  template void gelu_forward<T>(int64_t, const T*, T*);            \
  template void gelu_backward<T>(int64_t, const T*, const T*, T*); \
  template void scale_rows<T>(int64_t, int64_t, const T*, const T*, T*);
KAT_INSTANTIATE(float)
KAT_INSTANTIATE(double)
#undef KAT_INSTANTIATE

}  // namespace kat::ops
