// GR-KAN on the CPU (reference and CPU production path). Contract and math: ops/grkan.h. The
// kernels are in grkan_kernels.inc, compiled here for the build's target and, in a build for a
// target below x86-64-v3 (the portable wheel: KAT_CPU_ARCH ""), a second time for x86-64-v3 (AVX2,
// FMA), chosen at run time by the CPU (__builtin_cpu_supports; KAT_CPU_DISPATCH=default forces
// the first). The two differ in the last bits (FMA contraction, other vector widths): a run is
// reproducible on one machine, not bitwise across CPUs of different instruction sets. Measured on
// the 2-core dev VM (AMD EPYC with AVX-512, 2026-12-08), kat.torch.GRKAN at (32, 197, 768), one
// thread, fp32 fwd / fwd+bwd, bf16 fwd / fwd+bwd in ms: the portable wheel's first compilation
// (KAT_CPU_DISPATCH=default) 9.1 / 37.9, 8.8 / 37.0; its x86-64-v3 copy, chosen at run time,
// 5.3 / 25.6, 4.2 / 16.7; a wheel built for x86-64-v3 5.7 / 25.5, 3.8 / 19.9 (a shared, noisy VM).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "kat/core/bf16.h"
#include "kat/core/error.h"
#include "kat/core/fp16.h"
#include "ops/cpu/grkan.h"

namespace kat::ops {

// x86-64 GCC builds for a target without AVX2/FMA compile the kernels twice (see above); g++ 11 is
// the first to know the arch name x86-64-v3.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && \
    !(defined(__AVX2__) && defined(__FMA__))
#define KAT_GRKAN_V3_DISPATCH 1
#else
#define KAT_GRKAN_V3_DISPATCH 0
#endif

namespace grkan_default {
#include "ops/cpu/grkan_kernels.inc"
}  // namespace grkan_default

#if KAT_GRKAN_V3_DISPATCH
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
namespace grkan_v3 {
#include "ops/cpu/grkan_kernels.inc"
}  // namespace grkan_v3
#pragma GCC pop_options
#endif

// Run-time choice of the kernels' instruction set (only in builds whose target is below x86-64-v3).
#if KAT_GRKAN_V3_DISPATCH
bool grkan_cpu_uses_v3() {
  static const bool v3 = [] {
    const char* e = std::getenv("KAT_CPU_DISPATCH");
    if (e && std::string(e) == "default") return false;
    __builtin_cpu_init();
#if __GNUC__ >= 12
    return __builtin_cpu_supports("x86-64-v3") > 0;
#else  // g++ 11 (Ubuntu 22.04) has no ISA-level names: the features that define v3 in practice
    // (names every g++ since 5 knows; CPUs with these have v3's F16C, LZCNT and MOVBE too)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
           __builtin_cpu_supports("bmi2");
#endif
  }();
  return v3;
}
#define KAT_GRKAN_CALL(fn, ...) (grkan_cpu_uses_v3() ? grkan_v3::fn(__VA_ARGS__) : grkan_default::fn(__VA_ARGS__))
#else
bool grkan_cpu_uses_v3() {
#if defined(__AVX2__) && defined(__FMA__)
  return true;  // the build's own target is x86-64-v3 or above
#else
  return false;
#endif
}
#define KAT_GRKAN_CALL(fn, ...) grkan_default::fn(__VA_ARGS__)
#endif

template <typename T>
void grkan_forward(const GrkanShape& s, const T* x, const T* a, const T* b, T* y) {
  if constexpr (std::is_same_v<T, float>)
    KAT_GRKAN_CALL(forward_st, s, DType::F32, x, a, b, y);
  else
    KAT_GRKAN_CALL(forward_f64, s, x, a, b, y);
}

template <typename T>
void grkan_backward(const GrkanShape& s, const T* x, const T* dy, const T* a, const T* b, T* dx, T* da, T* db) {
  if constexpr (std::is_same_v<T, float>)
    KAT_GRKAN_CALL(backward_st, s, DType::F32, x, dy, a, b, dx, da, db);
  else
    KAT_GRKAN_CALL(backward_f64, s, x, dy, a, b, dx, da, db);
}

void grkan_forward(const GrkanShape& s, DType st, const void* x, const float* a, const float* b, void* y) {
  KAT_GRKAN_CALL(forward_st, s, st, x, a, b, y);
}

void grkan_backward(const GrkanShape& s, DType st, const void* x, const void* dy, const float* a, const float* b,
                    void* dx, float* da, float* db) {
  KAT_GRKAN_CALL(backward_st, s, st, x, dy, a, b, dx, da, db);
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
