// Multi-head self-attention core, CPU. One (batch, head) pair per task; each task owns its slice of
// the outputs, so there are no races and results do not depend on the thread count.
//   S = q k^T * scale (N, N);  P = softmax_rows(S);  out = P v
// Backward: dP = dout v^T; dv = P^T dout; dS = P * (dP - rowsum(P * dP)); dq = scale dS k;
//           dk = scale dS^T q.
// The products are small GEMMs on strided views of qkv (row stride 3D). Called inside an OpenMP
// parallel region, the OpenMP build of OpenBLAS runs each one single-threaded.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/attention.h"
#include "ops/cpu/gemm.h"
#include "ops/cpu/vec_math.h"

namespace kat::ops {

template <typename T>
void attention_forward(int64_t B, int64_t N, int64_t D, int64_t H, const T* qkv, T* out, T* probs) {
  check_attention_shape(B, N, D, H, "attention_forward");
  const int64_t hd = D / H, ld = 3 * D;
  const T scale = T(1) / std::sqrt(T(hd));
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const T* q = qkv + b * N * ld + h * hd;
      const T* k = q + D;
      const T* v = q + 2 * D;
      T* P = probs + (b * H + h) * N * N;
      gemm<T>(false, true, N, N, hd, scale, q, ld, k, ld, T(0), P, N);  // S = scale q k^T
      for (int64_t i = 0; i < N; ++i) {
        T* Pi = P + i * N;
        T mx = Pi[0];
#pragma omp simd reduction(max : mx)
        for (int64_t j = 1; j < N; ++j) mx = std::max(mx, Pi[j]);
          // libmvec's 8-wide expf (vec_math.h); with std::exp this loop called expf per element:
          // ~10 % of a kat_micro training step.
#pragma omp simd
        for (int64_t j = 0; j < N; ++j) Pi[j] = vmath::exp(Pi[j] - mx);
        T sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < N; ++j) sum += Pi[j];
        const T inv = T(1) / sum;
#pragma omp simd
        for (int64_t j = 0; j < N; ++j) Pi[j] *= inv;
      }
      gemm<T>(false, false, N, hd, N, T(1), P, N, v, ld, T(0), out + b * N * D + h * hd, D);  // out = P v
    }
}

template <typename T>
void attention_backward(int64_t B, int64_t N, int64_t D, int64_t H, const T* qkv, const T* probs, const T* dout,
                        T* dqkv) {
  check_attention_shape(B, N, D, H, "attention_backward");
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
      const T* P = probs + (b * H + h) * N * N;
      const T* g = dout + b * N * D + h * hd;
      thread_local std::vector<T> dS;  // (N, N) scratch, per thread, reused across calls
      dS.resize(N * N);
      gemm<T>(false, true, N, N, hd, T(1), g, D, v, ld, T(0), dS.data(), N);  // dP = dout v^T
      gemm<T>(true, false, N, hd, N, T(1), P, N, g, D, T(0), dv, ld);         // dv = P^T dout
      for (int64_t i = 0; i < N; ++i) {
        const T* Pi = P + i * N;
        T* dSi = dS.data() + i * N;
        T rowdot = 0;
        for (int64_t j = 0; j < N; ++j) rowdot += Pi[j] * dSi[j];
        for (int64_t j = 0; j < N; ++j) dSi[j] = Pi[j] * (dSi[j] - rowdot);
      }
      gemm<T>(false, false, N, hd, N, scale, dS.data(), N, k, ld, T(0), dq, ld);  // dq = scale dS k
      gemm<T>(true, false, N, hd, N, scale, dS.data(), N, q, ld, T(0), dk, ld);   // dk = scale dS^T q
    }
}

template void attention_forward<float>(int64_t, int64_t, int64_t, int64_t, const float*, float*, float*);
template void attention_forward<double>(int64_t, int64_t, int64_t, int64_t, const double*, double*, double*);
template void attention_backward<float>(int64_t, int64_t, int64_t, int64_t, const float*, const float*,
                                        const float*, float*);
template void attention_backward<double>(int64_t, int64_t, int64_t, int64_t, const double*, const double*,
                                         const double*, double*);

}  // namespace kat::ops
