// Softmax cross-entropy on the CPU (math in double). Contract: ops/cross_entropy.h.
#include "ops/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>

namespace kat::ops {

template <typename T>
double softmax_xent(int64_t B, int64_t K, const T* logits, const T* target, T ls, T* dlogits, T* row_loss) {
  check_softmax_xent_args(B, K, static_cast<double>(ls), "softmax_xent");
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
      if (dlogits) dlogits[b * K + k] = static_cast<T>((std::exp(static_cast<double>(z[k]) - lse) - tk) / B);
    }
    if (row_loss) row_loss[b] = static_cast<T>(l);
    total += l;
  }
  return total / static_cast<double>(B);
}

template double softmax_xent<float>(int64_t, int64_t, const float*, const float*, float, float*, float*);
template double softmax_xent<double>(int64_t, int64_t, const double*, const double*, double, double*, double*);

}  // namespace kat::ops
