// exp / erf for `omp simd` loops of the CPU ops. glibc's vector math library (libmvec, linked
// through libm) has 8-wide AVX2 expf/erff, but <math.h> only declares them as SIMD-callable under
// -ffast-math, which we do not use (it would relax every float operation). Declaring the simd
// variants here, as glibc's header does, lets GCC call _ZGVdN8v_expf / _ZGVdN8v_erff from
// vectorised loops while the rest of the code keeps strict IEEE semantics. libmvec's expf/erff are
// accurate to a few ulp (not correctly rounded): the ops' tolerances against float64 already allow
// that, and results stay deterministic for a given build and machine.
#pragma once
#include <cmath>

extern "C" {
__attribute__((simd("notinbranch"))) float expf(float) noexcept;
__attribute__((simd("notinbranch"))) float erff(float) noexcept;
}

namespace kat::ops::vmath {
inline float exp(float x) { return ::expf(x); }
inline double exp(double x) { return std::exp(x); }
inline float erf(float x) { return ::erff(x); }
inline double erf(double x) { return std::erf(x); }
}  // namespace kat::ops::vmath
