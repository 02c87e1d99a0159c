// GR-KAN on 16-bit tensors (the Python op's bf16 / fp16 path, ops/cpu/grkan.h storage-typed entry
// points) and the host fp16 conversions it relies on (core/fp16.h).
//
// Tolerances: the 16-bit path computes in fp32 on the widened inputs, exactly as the fp32 kernel
// does on the same (already 16-bit-representable) values, then rounds once. So y and dx may differ
// from the fp32 result by the final rounding (half an ulp of the 16-bit type) plus fp32 noise from a
// differently contracted FMA (~1e-6 relative): 1 ulp of the 16-bit type is the bound (2^-8 relative
// for bf16, 2^-11 for fp16, plus fp16's subnormal spacing 2^-24 absolute). The coefficient
// gradients are fp32 sums of the same fp32 terms: equal to the fp32 path's within 1e-6 relative.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "kat/core/bf16.h"
#include "kat/core/error.h"
#include "kat/core/fp16.h"
#include "kat/core/rng.h"
#include "ops/cpu/grkan.h"

using namespace kat;
using namespace kat::ops;

namespace {

// The value of a finite half from its fields, independently of fp16_to_float.
double half_value(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const double mag = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
  return (h & 0x8000) ? -mag : mag;
}

TEST(Fp16, WideningIsExactAndRoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const int e = (h >> 10) & 31;
    const float f = fp16_to_float(uint16_t(h));
    if (e == 31) {
      if (h & 1023)
        EXPECT_TRUE(std::isnan(f)) << h;
      else
        EXPECT_EQ(f, (h & 0x8000) ? -INFINITY : INFINITY) << h;
      continue;
    }
    ASSERT_EQ(double(f), half_value(uint16_t(h))) << h;
    ASSERT_EQ(float_to_fp16(f), h) << h;  // also -0 -> 0x8000
  }
  EXPECT_TRUE(std::isnan(fp16_to_float(float_to_fp16(NAN))));
}

TEST(Fp16, NarrowingRoundsToNearestEven) {
  // Between every pair of adjacent positive finite halves: just below, at and just above the
  // midpoint. Ties go to the even mantissa; past 65504 the next "half" is infinity (0x7C00).
  for (uint32_t h = 0; h < 0x7BFF; ++h) {
    const double lo = half_value(uint16_t(h)), hi = half_value(uint16_t(h + 1)), mid = (lo + hi) / 2;
    const float fm = float(mid);
    ASSERT_EQ(double(fm), mid);  // midpoints of halves are floats
    const uint16_t even = (h & 1) ? uint16_t(h + 1) : uint16_t(h);
    ASSERT_EQ(float_to_fp16(fm), even) << h;
    ASSERT_EQ(float_to_fp16(std::nextafter(fm, 0.f)), h) << h;
    ASSERT_EQ(float_to_fp16(std::nextafter(fm, INFINITY)), h + 1) << h;
    ASSERT_EQ(float_to_fp16(-fm), even | 0x8000) << h;
  }
  EXPECT_EQ(float_to_fp16(65504.f), 0x7BFF);
  EXPECT_EQ(float_to_fp16(65519.99f), 0x7BFF);
  EXPECT_EQ(float_to_fp16(65520.f), 0x7C00);  // the tie above the largest half rounds to inf
  EXPECT_EQ(float_to_fp16(1e30f), 0x7C00);
  EXPECT_EQ(float_to_fp16(-INFINITY), 0xFC00);
  EXPECT_EQ(float_to_fp16(1e-30f), 0x0000);
}

class GrkanStorage : public ::testing::TestWithParam<std::tuple<DType, bool>> {};

// Rounds v to the storage type and back.
float round_to(DType st, float v) {
  return st == DType::BF16 ? bf16_to_float(float_to_bf16(v)) : fp16_to_float(float_to_fp16(v));
}
uint16_t bits_of(DType st, float v) { return st == DType::BF16 ? float_to_bf16(v) : float_to_fp16(v); }
float from_bits(DType st, uint16_t b) { return st == DType::BF16 ? bf16_to_float(b) : fp16_to_float(b); }

TEST_P(GrkanStorage, MatchesFp32PathWithinOneUlp) {
  const auto [st, fast] = GetParam();
  const double rel = st == DType::BF16 ? 0x1p-8 : 0x1p-11, abs_tol = st == DType::BF16 ? 0.0 : 0x1p-24;
  Rng r(5);
  // fast: degrees (5, 4), the specialised kernel; else (3, 2) with a per-group numerator.
  const GrkanShape s = fast ? GrkanShape{257, 48, 8, 1, 5, 4} : GrkanShape{131, 24, 4, 4, 3, 2};
  const size_t n = size_t(s.rows) * s.dim;
  std::vector<float> x(n), g(n), a(size_t(s.num_rows) * (s.m + 1)), b(size_t(s.groups) * s.n);
  std::vector<uint16_t> x16(n), g16(n), y16(n), dx16(n);
  for (size_t i = 0; i < n; ++i) {
    x[i] = round_to(st, float(r.normal() * 2));
    g[i] = round_to(st, float(r.normal()));
    x16[i] = bits_of(st, x[i]);
    g16[i] = bits_of(st, g[i]);
  }
  for (auto& v : a) v = float(r.normal() * 0.3);
  for (auto& v : b) v = float(r.normal() * 0.3);
  std::vector<float> y(n), dx(n), da(a.size(), 0), db(b.size(), 0), da16(a.size(), 0), db16(b.size(), 0);
  grkan_forward<float>(s, x.data(), a.data(), b.data(), y.data());
  grkan_backward<float>(s, x.data(), g.data(), a.data(), b.data(), dx.data(), da.data(), db.data());
  y16.assign(n, 0xFFFF);  // poisoned: NaN in both types
  dx16.assign(n, 0xFFFF);
  grkan_forward(s, st, x16.data(), a.data(), b.data(), y16.data());
  grkan_backward(s, st, x16.data(), g16.data(), a.data(), b.data(), dx16.data(), da16.data(), db16.data());
  for (size_t i = 0; i < n; ++i) {
    ASSERT_NEAR(from_bits(st, y16[i]), y[i], rel * std::abs(y[i]) + abs_tol) << i;
    ASSERT_NEAR(from_bits(st, dx16[i]), dx[i], rel * std::abs(dx[i]) + abs_tol) << i;
  }
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(da16[i], da[i], 1e-6 * std::abs(da[i]) + 1e-6) << i;
  for (size_t i = 0; i < b.size(); ++i) EXPECT_NEAR(db16[i], db[i], 1e-6 * std::abs(db[i]) + 1e-6) << i;
}

INSTANTIATE_TEST_SUITE_P(Ops, GrkanStorage,
                         ::testing::Combine(::testing::Values(DType::BF16, DType::F16), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<std::tuple<DType, bool>>& p) {
  return std::string(dtype_name(std::get<0>(p.param))) + (std::get<1>(p.param) ? "_deg54" : "_generic");
});

TEST(GrkanStorage, F32IsTheFloatKernel) {
  Rng r(6);
  const GrkanShape s{40, 16, 8, 1, 5, 4};
  std::vector<float> x(640), g(640), a(6), b(32);
  for (auto& v : x) v = float(r.normal());
  for (auto& v : g) v = float(r.normal());
  for (auto& v : a) v = float(r.normal() * 0.3);
  for (auto& v : b) v = float(r.normal() * 0.3);
  std::vector<float> y1(640), y2(640), dx1(640), dx2(640), da1(6, 0), da2(6, 0), db1(32, 0), db2(32, 0);
  grkan_forward<float>(s, x.data(), a.data(), b.data(), y1.data());
  grkan_forward(s, DType::F32, x.data(), a.data(), b.data(), y2.data());
  grkan_backward<float>(s, x.data(), g.data(), a.data(), b.data(), dx1.data(), da1.data(), db1.data());
  grkan_backward(s, DType::F32, x.data(), g.data(), a.data(), b.data(), dx2.data(), da2.data(), db2.data());
  EXPECT_EQ(y1, y2);
  EXPECT_EQ(dx1, dx2);
  EXPECT_EQ(da1, da2);
  EXPECT_EQ(db1, db2);
  const GrkanShape bad{4, 10, 8, 1, 5, 4};  // 10 channels in 8 groups
  EXPECT_THROW(grkan_forward(bad, DType::F16, x.data(), a.data(), b.data(), y1.data()), Error);
}

}  // namespace
