// Multi-head self-attention core, CPU. One (batch, head) pair per task; each task owns its slice of
// the outputs, so there are no races and results do not depend on the thread count.
//   S = q k^T * scale (N, N);  P = softmax_rows(S);  out = P v
// Backward: dP = dout v^T; dv = P^T dout; dS = P * (dP - rowsum(P * dP)); dq = scale dS k;
//           dk = scale dS^T q.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/cpu_ops.h"

namespace kat::ops {

template <typename T>
void attention_forward(int64_t B, int64_t N, int64_t D, int64_t H, const T* qkv, T* out, T* probs) {
  const int64_t hd = D / H, ld = 3 * D;
  const T scale = T(1) / std::sqrt(T(hd));
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const T* q = qkv + b * N * ld + h * hd;
      const T* k = q + D;
      const T* v = q + 2 * D;
      T* P = probs + (b * H + h) * N * N;
      for (int64_t i = 0; i < N; ++i) {
        T* Pi = P + i * N;
        const T* qi = q + i * ld;
        T mx = -INFINITY;
        for (int64_t j = 0; j < N; ++j) {
          const T* kj = k + j * ld;
          T s = 0;
#pragma omp simd reduction(+ : s)
          for (int64_t c = 0; c < hd; ++c) s += qi[c] * kj[c];
          Pi[j] = s * scale;
          mx = std::max(mx, Pi[j]);
        }
        T sum = 0;
        for (int64_t j = 0; j < N; ++j) {
          Pi[j] = std::exp(Pi[j] - mx);
          sum += Pi[j];
        }
        const T inv = T(1) / sum;
        T* oi = out + (b * N + i) * D + h * hd;
        for (int64_t c = 0; c < hd; ++c) oi[c] = 0;
        for (int64_t j = 0; j < N; ++j) {
          Pi[j] *= inv;
          const T p = Pi[j];
          const T* vj = v + j * ld;
#pragma omp simd
          for (int64_t c = 0; c < hd; ++c) oi[c] += p * vj[c];
        }
      }
    }
}

template <typename T>
void attention_backward(int64_t B, int64_t N, int64_t D, int64_t H, const T* qkv, const T* probs,
                        const T* dout, T* dqkv) {
  const int64_t hd = D / H, ld = 3 * D;
  const T scale = T(1) / std::sqrt(T(hd));
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const T* q = qkv + b * N * ld + h * hd;
      const T* k = q + D;
      const T* v = q + 2 * D;
      T* dq = dqkv + b * N * ld + h * hd;
      T* dk = dq + D;
      T* dv = dq + 2 * D;
      for (int64_t i = 0; i < N; ++i)
        for (int64_t c = 0; c < hd; ++c) dq[i * ld + c] = dk[i * ld + c] = dv[i * ld + c] = 0;
      const T* P = probs + (b * H + h) * N * N;
      thread_local std::vector<T> dP;  // (N) row scratch, reused across calls
      dP.resize(N);
      for (int64_t i = 0; i < N; ++i) {
        const T* Pi = P + i * N;
        const T* gi = dout + (b * N + i) * D + h * hd;
        T rowdot = 0;
        for (int64_t j = 0; j < N; ++j) {
          const T* vj = v + j * ld;
          T* dvj = dv + j * ld;
          T s = 0;
          const T p = Pi[j];
#pragma omp simd reduction(+ : s)
          for (int64_t c = 0; c < hd; ++c) {
            s += gi[c] * vj[c];
            dvj[c] += p * gi[c];
          }
          dP[j] = s;
          rowdot += p * s;
        }
        const T* qi = q + i * ld;
        T* dqi = dq + i * ld;
        for (int64_t j = 0; j < N; ++j) {
          const T ds = Pi[j] * (dP[j] - rowdot) * scale;
          const T* kj = k + j * ld;
          T* dkj = dk + j * ld;
#pragma omp simd
          for (int64_t c = 0; c < hd; ++c) {
            dqi[c] += ds * kj[c];
            dkj[c] += ds * qi[c];
          }
        }
      }
    }
}

template void attention_forward<float>(int64_t, int64_t, int64_t, int64_t, const float*, float*, float*);
template void attention_forward<double>(int64_t, int64_t, int64_t, int64_t, const double*, double*, double*);
template void attention_backward<float>(int64_t, int64_t, int64_t, int64_t, const float*, const float*, const float*, float*);
template void attention_backward<double>(int64_t, int64_t, int64_t, int64_t, const double*, const double*, const double*, double*);

}  // namespace kat::ops
