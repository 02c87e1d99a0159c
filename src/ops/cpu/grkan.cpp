// GR-KAN on the CPU (reference and CPU production path). Contract and math: ops/grkan.h.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kat/core/bf16.h"
#include "kat/core/error.h"
#include "kat/core/fp16.h"
#include "ops/cpu/grkan.h"

namespace kat::ops {

namespace {
constexpr int kMaxDeg = GrkanShape::kMaxDegree;
// Number of row chunks of the coefficient reduction. Fixed (not the thread count), so results are
// bitwise identical whatever OMP_NUM_THREADS is.
constexpr int64_t kChunks = 64;

// Element storage of x, y, dy, dx. The kernels below are templated on the storage S and the math
// type T (the coefficients' type): S = T for float and double, and the 16-bit storages (the Python
// op's bf16 / fp16 tensors) compute in T = float, widened per element on load and rounded to
// nearest even once on store, as the CUDA kernels do.
struct Bf16 {
  uint16_t bits;
};
struct Half {
  uint16_t bits;
};
inline float to_math(float v) { return v; }
inline double to_math(double v) { return v; }
inline float to_math(Bf16 v) { return bf16_to_float(v.bits); }
inline float to_math(Half v) { return fp16_to_float(v.bits); }
template <typename S, typename T>
inline S from_math(T v) {
  if constexpr (std::is_same_v<S, Bf16>)
    return Bf16{float_to_bf16(v)};
  else if constexpr (std::is_same_v<S, Half>)
    return Half{float_to_fp16(v)};
  else
    return static_cast<S>(v);
}
}  // namespace

// ---- Fast path for the checkpoint degrees (m, n) = (5, 4) ------------------------------------
// Coefficients are expanded per channel (ca[k][c], cb[k][c] = |b_k| of c's group) so the inner loop
// runs over the D contiguous channels of a row and vectorizes (AVX2/AVX-512) with no reductions.
// The coefficient-gradient partials are per-channel float arrays per chunk of rows, folded into
// per-group doubles at the end of the chunk: deterministic and independent of the thread count.
namespace {

// Second stage of the coefficient reduction: add the per-chunk partials (layout [chunk][na + nb],
// d|b| for the denominator) in a fixed order, apply d|b|/db = sign(b) (sign(0) = +1), accumulate.
template <typename T>
void add_chunk_partials(const std::vector<double>& part, int64_t chunks, int64_t na, int64_t nb, const T* b, T* da,
                        T* db) {
  for (int64_t i = 0; i < na; ++i) {
    double t = 0;
    for (int64_t ch = 0; ch < chunks; ++ch) t += part[ch * (na + nb) + i];
    da[i] += static_cast<T>(t);
  }
  for (int64_t i = 0; i < nb; ++i) {
    double t = 0;
    for (int64_t ch = 0; ch < chunks; ++ch) t += part[ch * (na + nb) + na + i];
    db[i] += static_cast<T>(t * (b[i] >= T(0) ? 1.0 : -1.0));
  }
}

template <typename T>
void expand_coefficients(const GrkanShape& s, const T* a, const T* b, std::vector<T>& ca, std::vector<T>& cb) {
  const int D = s.dim, Dg = D / s.groups;
  ca.resize(6 * size_t(D));
  cb.resize(4 * size_t(D));
  for (int c = 0; c < D; ++c) {
    const int g = c / Dg, arow = s.num_rows == 1 ? 0 : g;
    for (int k = 0; k < 6; ++k) ca[k * D + c] = a[arow * 6 + k];
    for (int k = 0; k < 4; ++k) cb[k * D + c] = std::abs(b[g * 4 + k]);
  }
}

template <typename S, typename T>
void forward_54(const GrkanShape& s, const S* x, const T* a, const T* b, S* y) {
  const int64_t D = s.dim;
  thread_local std::vector<T> ca, cb;
  expand_coefficients(s, a, b, ca, cb);
  const T *a0 = ca.data(), *a1 = a0 + D, *a2 = a1 + D, *a3 = a2 + D, *a4 = a3 + D, *a5 = a4 + D;
  const T *b1 = cb.data(), *b2 = b1 + D, *b3 = b2 + D, *b4 = b3 + D;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < s.rows; ++r) {
    const S* xr = x + r * D;
    S* yr = y + r * D;
#pragma omp simd
    for (int64_t c = 0; c < D; ++c) {
      const T v = to_math(xr[c]), av = std::abs(v);
      const T P = a0[c] + v * (a1[c] + v * (a2[c] + v * (a3[c] + v * (a4[c] + v * a5[c]))));
      const T Q = T(1) + av * (b1[c] + av * (b2[c] + av * (b3[c] + av * b4[c])));
      yr[c] = from_math<S>(P / Q);
    }
  }
}

template <typename S, typename T>
void backward_54(const GrkanShape& s, const S* x, const S* dy, const T* a, const T* b, S* dx, T* da, T* db) {
  const int64_t D = s.dim, Dg = D / s.groups, G = s.groups, An = s.num_rows;
  thread_local std::vector<T> ca, cb;
  expand_coefficients(s, a, b, ca, cb);
  const T *a0 = ca.data(), *a1 = a0 + D, *a2 = a1 + D, *a3 = a2 + D, *a4 = a3 + D, *a5 = a4 + D;
  const T *b1 = cb.data(), *b2 = b1 + D, *b3 = b2 + D, *b4 = b3 + D;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(kChunks, s.rows));
  const int64_t na = An * 6, nb = G * 4;
  thread_local std::vector<double> part;
  part.assign(size_t(chunks) * (na + nb), 0.0);
  double* const partp = part.data();  // threads of the region below share the caller's scratch
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    thread_local std::vector<T> acc;  // (10, D): d a_0..a_5, d|b_1|..d|b_4| per channel
    acc.assign(10 * size_t(D), T(0));
    T* A[6];
    T* Bq[4];
    for (int k = 0; k < 6; ++k) A[k] = acc.data() + k * D;
    for (int k = 0; k < 4; ++k) Bq[k] = acc.data() + (6 + k) * D;
    T *A0 = A[0], *A1 = A[1], *A2 = A[2], *A3 = A[3], *A4 = A[4], *A5 = A[5];
    T *B1 = Bq[0], *B2 = Bq[1], *B3 = Bq[2], *B4 = Bq[3];
    for (int64_t r = s.rows * ch / chunks; r < s.rows * (ch + 1) / chunks; ++r) {
      const S* xr = x + r * D;
      const S* gr = dy + r * D;
      S* dxr = dx + r * D;
#pragma omp simd
      for (int64_t c = 0; c < D; ++c) {
        const T v = to_math(xr[c]), av = std::abs(v), g = to_math(gr[c]);
        const T sx = v >= T(0) ? T(1) : T(-1);
        const T P = a0[c] + v * (a1[c] + v * (a2[c] + v * (a3[c] + v * (a4[c] + v * a5[c]))));
        const T R = a1[c] + v * (T(2) * a2[c] + v * (T(3) * a3[c] + v * (T(4) * a4[c] + v * T(5) * a5[c])));
        const T Q = T(1) + av * (b1[c] + av * (b2[c] + av * (b3[c] + av * b4[c])));
        const T Sd = sx * (b1[c] + av * (T(2) * b2[c] + av * (T(3) * b3[c] + av * T(4) * b4[c])));
        const T iQ = T(1) / Q;
        dxr[c] = from_math<S>(g * (R - Sd * P * iQ) * iQ);  // g (R Q - S P) / Q^2
        const T gq = g * iQ, gp = -gq * P * iQ;
        const T v2 = v * v, v3 = v2 * v, v4 = v2 * v2;
        A0[c] += gq;
        A1[c] += gq * v;
        A2[c] += gq * v2;
        A3[c] += gq * v3;
        A4[c] += gq * v4;
        A5[c] += gq * v4 * v;
        B1[c] += gp * av;
        B2[c] += gp * v2;
        B3[c] += gp * v2 * av;
        B4[c] += gp * v4;
      }
    }
    double* pa = partp + ch * (na + nb);
    double* pb = pa + na;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t arow = An == 1 ? 0 : g;
      for (int k = 0; k < 6; ++k) {
        double t = 0;
        for (int64_t c = g * Dg; c < (g + 1) * Dg; ++c) t += A[k][c];
        pa[arow * 6 + k] += t;
      }
      for (int k = 0; k < 4; ++k) {
        double t = 0;
        for (int64_t c = g * Dg; c < (g + 1) * Dg; ++c) t += Bq[k][c];
        pb[g * 4 + k] += t;
      }
    }
  }
  add_chunk_partials(part, chunks, na, nb, b, da, db);
}

}  // namespace

namespace {

template <typename S, typename T>
void forward_any(const GrkanShape& s, const S* x, const T* a, const T* b, S* y) {
  s.validate("grkan_forward");
  if (s.m == 5 && s.n == 4) return forward_54(s, x, a, b, y);
  const int D = s.dim, G = s.groups, Dg = D / G, m = s.m, n = s.n;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < s.rows; ++r) {
    const S* xr = x + r * D;
    S* yr = y + r * D;
    for (int g = 0; g < G; ++g) {
      const T* ag = a + (s.num_rows == 1 ? 0 : g) * (m + 1);
      T babs[kMaxDeg];
      for (int k = 0; k < n; ++k) babs[k] = std::abs(b[g * n + k]);
      for (int c = g * Dg; c < (g + 1) * Dg; ++c) {
        const T v = to_math(xr[c]), av = std::abs(v);
        T P = ag[m];
        for (int k = m - 1; k >= 0; --k) P = P * v + ag[k];  // Horner
        T Qm = n > 0 ? babs[n - 1] : T(0);                   // Q = 1 + |x| (|b1| + |x|(|b2| + ...))
        for (int k = n - 2; k >= 0; --k) Qm = Qm * av + babs[k];
        const T Q = T(1) + (n > 0 ? Qm * av : T(0));
        yr[c] = from_math<S>(P / Q);
      }
    }
  }
}

template <typename S, typename T>
void backward_any(const GrkanShape& s, const S* x, const S* dy, const T* a, const T* b, S* dx, T* da, T* db) {
  s.validate("grkan_backward");
  if (s.m == 5 && s.n == 4) return backward_54(s, x, dy, a, b, dx, da, db);
  const int D = s.dim, G = s.groups, Dg = D / G, m = s.m, n = s.n;
  const int An = s.num_rows;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(kChunks, s.rows));
  // Per-chunk partials in double: [chunk][An*(m+1) + G*n].
  const int na = An * (m + 1), nb = G * n;
  // Scratch reused across calls (grows once, no allocation in the steady state).
  thread_local std::vector<double> part;
  part.assign(static_cast<size_t>(chunks) * (na + nb), 0.0);
  double* const partp = part.data();  // threads of the region below share the caller's scratch
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t r0 = s.rows * ch / chunks, r1 = s.rows * (ch + 1) / chunks;
    double* pa = partp + ch * (na + nb);
    double* pb = pa + na;
    for (int64_t r = r0; r < r1; ++r) {
      const S* xr = x + r * D;
      const S* gr = dy + r * D;
      S* dxr = dx + r * D;
      for (int g = 0; g < G; ++g) {
        const int arow = (An == 1 ? 0 : g);
        const T* ag = a + arow * (m + 1);
        T babs[kMaxDeg];
        for (int k = 0; k < n; ++k) {
          babs[k] = std::abs(b[g * n + k]);
        }
        double acc_a[kMaxDeg + 1] = {0}, acc_b[kMaxDeg] = {0};
        for (int c = g * Dg; c < (g + 1) * Dg; ++c) {
          const T v = to_math(xr[c]), sx = v >= T(0) ? T(1) : T(-1);
          const T gy = to_math(gr[c]);
          T xp[kMaxDeg + 1];  // x^k
          xp[0] = T(1);
          for (int k = 1; k <= std::max(m, n); ++k) xp[k] = xp[k - 1] * v;
          T P = 0, R = 0;
          for (int k = 0; k <= m; ++k) P += ag[k] * xp[k];
          for (int k = 1; k <= m; ++k) R += T(k) * ag[k] * xp[k - 1];
          // |x|^k = |x^k|
          T Q = T(1), Sd = T(0);
          for (int k = 1; k <= n; ++k) {
            Q += babs[k - 1] * std::abs(xp[k]);
            Sd += T(k) * babs[k - 1] * std::abs(xp[k - 1]);
          }
          Sd *= sx;
          const T invQ = T(1) / Q;
          dxr[c] = from_math<S>(gy * (R * Q - Sd * P) * invQ * invQ);
          const T gq = gy * invQ;                // g / Q
          const T gpq2 = -gy * P * invQ * invQ;  // g * (-P/Q^2)
          for (int k = 0; k <= m; ++k) acc_a[k] += static_cast<double>(gq * xp[k]);
          for (int k = 1; k <= n; ++k) acc_b[k - 1] += static_cast<double>(gpq2 * std::abs(xp[k]));
        }
        for (int k = 0; k <= m; ++k) pa[arow * (m + 1) + k] += acc_a[k];
        for (int k = 0; k < n; ++k) pb[g * n + k] += acc_b[k];  // d|b|; sign(b) applied at the end
      }
    }
  }
  add_chunk_partials(part, chunks, na, nb, b, da, db);
}

}  // namespace

template <typename T>
void grkan_forward(const GrkanShape& s, const T* x, const T* a, const T* b, T* y) {
  forward_any(s, x, a, b, y);
}

template <typename T>
void grkan_backward(const GrkanShape& s, const T* x, const T* dy, const T* a, const T* b, T* dx, T* da, T* db) {
  backward_any(s, x, dy, a, b, dx, da, db);
}

void grkan_forward(const GrkanShape& s, DType st, const void* x, const float* a, const float* b, void* y) {
  switch (st) {
    case DType::F32: return forward_any(s, static_cast<const float*>(x), a, b, static_cast<float*>(y));
    case DType::BF16: return forward_any(s, static_cast<const Bf16*>(x), a, b, static_cast<Bf16*>(y));
    case DType::F16: return forward_any(s, static_cast<const Half*>(x), a, b, static_cast<Half*>(y));
  }
  KAT_CHECK(false, "grkan_forward: unknown element type");
}

void grkan_backward(const GrkanShape& s, DType st, const void* x, const void* dy, const float* a, const float* b,
                    void* dx, float* da, float* db) {
  switch (st) {
    case DType::F32:
      return backward_any(s, static_cast<const float*>(x), static_cast<const float*>(dy), a, b,
                          static_cast<float*>(dx), da, db);
    case DType::BF16:
      return backward_any(s, static_cast<const Bf16*>(x), static_cast<const Bf16*>(dy), a, b,
                          static_cast<Bf16*>(dx), da, db);
    case DType::F16:
      return backward_any(s, static_cast<const Half*>(x), static_cast<const Half*>(dy), a, b,
                          static_cast<Half*>(dx), da, db);
  }
  KAT_CHECK(false, "grkan_backward: unknown element type");
}

double grkan_eval(const double* a, int m, const double* b, int n, double x) {
  double P = 0, Q = 1, xp = 1;
  for (int k = 0; k <= std::max(m, n); ++k) {
    if (k <= m) P += a[k] * xp;
    if (k >= 1 && k <= n) Q += std::abs(b[k - 1]) * std::abs(xp);
    xp *= x;
  }
  return P / Q;
}

template void grkan_forward<float>(const GrkanShape&, const float*, const float*, const float*, float*);
template void grkan_forward<double>(const GrkanShape&, const double*, const double*, const double*, double*);
template void grkan_backward<float>(const GrkanShape&, const float*, const float*, const float*, const float*,
                                    float*, float*, float*);
template void grkan_backward<double>(const GrkanShape&, const double*, const double*, const double*, const double*,
                                     double*, double*, double*);

}  // namespace kat::ops
