// FP8 formats, the recipe's scalar pieces and the CPU reference ops (core/fp8.h, ops/fp8.h,
// ops/cpu/fp8.h): encode/decode against a brute-force nearest-code search, ties, saturation, NaN,
// subnormals, signed zero; the power-of-two scales; the amax history ring and delayed scale; amax,
// (fake) quantisation and the FP8 linear layer against a double computation over hand-quantised
// inputs; the model's FP8 mode (KatModel::enable_fp8): close to fp32, trains, advances its amax
// history once per training pass and never in eval.
//
// The brute force is the definition the encoder must meet: among the codes of x's sign with a finite
// value, the one nearest to x (in double, exact for these values), ties to the even code. Since the
// largest finite code is the nearest finite code to anything beyond it, saturation (__NV_SATFINITE)
// falls out of the same definition.
#include <gtest/gtest.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kat/core/error.h"
#include "kat/core/fp8.h"
#include "kat/core/rng.h"
#include "kat/model/kat_model.h"
#include "kat/train/cpu_engine.h"
#include "ops/cpu/fp8.h"
#include "ops/cpu/gemm.h"
#include "ops/fp8.h"
#include "test_util.h"

using namespace kat;
using kat::ops::fp8_scale_for_amax;
using kat::ops::Fp8AmaxHistory;

namespace {

constexpr Fp8Format kFormats[] = {Fp8Format::E4M3, Fp8Format::E5M2};

bool finite_code(uint8_t c, Fp8Format f) { return std::isfinite(fp8_to_float(c, f)); }

// The nearest finite code of x's sign (ties to the even code); x not NaN.
uint8_t brute_force(float x, Fp8Format f) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const double xd = x;
  int best = -1;
  double best_d = INFINITY;
  for (int m = 0; m <= fp8_traits(f).max_code; ++m) {
    const uint8_t c = sign | uint8_t(m);
    const double d = std::abs(double(fp8_to_float(c, f)) - xd);
    if (d < best_d || (d == best_d && (c & 1) == 0)) best = c, best_d = d;
  }
  return uint8_t(best);
}

float bits_next(float x, int ulps) { return std::bit_cast<float>(std::bit_cast<uint32_t>(x) + uint32_t(ulps)); }

}  // namespace

TEST(Fp8Format, KnownValues) {
  using F = Fp8Format;
  EXPECT_EQ(fp8_to_float(0x7E, F::E4M3), 448.0f);
  EXPECT_EQ(fp8_to_float(0xFE, F::E4M3), -448.0f);
  EXPECT_EQ(fp8_to_float(0x08, F::E4M3), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(fp8_to_float(0x01, F::E4M3), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(fp8_to_float(0x38, F::E4M3), 1.0f);
  EXPECT_EQ(fp8_to_float(0x39, F::E4M3), 1.125f);
  EXPECT_TRUE(std::isnan(fp8_to_float(0x7F, F::E4M3)));
  EXPECT_TRUE(std::isnan(fp8_to_float(0xFF, F::E4M3)));
  EXPECT_EQ(fp8_to_float(0x7B, F::E5M2), 57344.0f);
  EXPECT_EQ(fp8_to_float(0x04, F::E5M2), std::ldexp(1.0f, -14));
  EXPECT_EQ(fp8_to_float(0x01, F::E5M2), std::ldexp(1.0f, -16));
  EXPECT_EQ(fp8_to_float(0x3C, F::E5M2), 1.0f);
  EXPECT_EQ(fp8_to_float(0x3D, F::E5M2), 1.25f);
  EXPECT_EQ(fp8_to_float(0x7C, F::E5M2), INFINITY);
  EXPECT_EQ(fp8_to_float(0xFC, F::E5M2), -INFINITY);
  for (uint8_t c : {0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF}) EXPECT_TRUE(std::isnan(fp8_to_float(c, F::E5M2)));
  // -0 decodes to a negative zero.
  EXPECT_TRUE(std::signbit(fp8_to_float(0x80, F::E4M3)) && fp8_to_float(0x80, F::E4M3) == 0.0f);
  EXPECT_TRUE(std::signbit(fp8_to_float(0x80, F::E5M2)));
  // Decoding is strictly increasing over the finite positive codes (no code decodes twice).
  for (Fp8Format f : kFormats)
    for (int c = 1; c <= fp8_traits(f).max_code; ++c)
      EXPECT_GT(fp8_to_float(uint8_t(c), f), fp8_to_float(uint8_t(c - 1), f)) << fp8_name(f) << " code " << c;
}

TEST(Fp8Format, EveryFiniteCodeRoundTrips) {
  for (Fp8Format f : kFormats) {
    int finite = 0;
    for (int c = 0; c < 256; ++c) {
      if (!finite_code(uint8_t(c), f)) continue;
      ++finite;
      EXPECT_EQ(float_to_fp8(fp8_to_float(uint8_t(c), f), f), c) << fp8_name(f) << " code " << c;
    }
    // E4M3: 256 - 2 NaN codes; E5M2: 256 - 2 infinities - 6 NaNs.
    EXPECT_EQ(finite, f == Fp8Format::E4M3 ? 254 : 248) << fp8_name(f);
  }
}

TEST(Fp8Format, RandomFloatsMatchTheNearestCode) {
  Rng r(13);
  for (Fp8Format f : kFormats) {
    int mismatches = 0;
    for (int i = 0; i < 50000; ++i) {
      // Log-uniform magnitudes from well below the smallest subnormal to beyond the largest finite
      // value, with a random fp32 mantissa, both signs.
      const float mag = float(std::ldexp(1.0 + r.uniform(0.0, 1.0), int(std::floor(r.uniform(-22.0, 20.0)))));
      const float x = r.uniform(0.0, 1.0) < 0.5 ? -mag : mag;
      const uint8_t got = float_to_fp8(x, f), want = brute_force(x, f);
      if (got != want && ++mismatches <= 10)
        ADD_FAILURE() << fp8_name(f) << " x=" << x << ": got 0x" << std::hex << int(got) << " want 0x"
                      << int(want);
    }
    EXPECT_EQ(mismatches, 0) << fp8_name(f);
  }
}

// Exact midpoints between neighbouring codes go to the even code; one fp32 ulp either side goes to
// the nearer code. Covers subnormals, the subnormal/normal boundary, binade boundaries and the
// midpoint above the largest finite code (saturates).
TEST(Fp8Format, TiesGoToTheEvenCode) {
  for (Fp8Format f : kFormats) {
    const int max_code = fp8_traits(f).max_code;
    for (int sign : {0x00, 0x80})
      for (int c = 0; c < max_code; ++c) {
        const float lo = fp8_to_float(uint8_t(sign | c), f), hi = fp8_to_float(uint8_t(sign | (c + 1)), f);
        const float mid = (lo + hi) / 2;  // exact: both have at most 4 significant bits
        ASSERT_EQ(double(mid), (double(lo) + double(hi)) / 2);
        const int even = (c % 2 == 0) ? c : c + 1;
        EXPECT_EQ(float_to_fp8(mid, f), sign | even) << fp8_name(f) << " midpoint of codes " << c << ", " << c + 1;
        // One ulp towards zero from the midpoint's magnitude: the smaller magnitude, and away: the larger.
        EXPECT_EQ(float_to_fp8(bits_next(mid, -1), f), sign | c) << fp8_name(f) << " below midpoint " << c;
        EXPECT_EQ(float_to_fp8(bits_next(mid, +1), f), sign | (c + 1)) << fp8_name(f) << " above midpoint " << c;
      }
    // Above the largest finite code: the would-be next code's midpoint and beyond saturate.
    const float max = fp8_traits(f).max_finite;
    const float step = max - fp8_to_float(uint8_t(max_code - 1), f);
    for (float x : {max + step / 2, max + step, 2 * max})
      EXPECT_EQ(float_to_fp8(x, f), max_code) << fp8_name(f) << " x=" << x;
  }
  // Hand-picked E4M3 cases: 1.0625 lies halfway between 1 (0x38, even) and 1.125 (0x39).
  EXPECT_EQ(float_to_fp8(1.0625f, Fp8Format::E4M3), 0x38);
  EXPECT_EQ(float_to_fp8(1.1875f, Fp8Format::E4M3), 0x3A);  // between 0x39 and 0x3A (1.25): even 0x3A
  EXPECT_EQ(float_to_fp8(-1.0625f, Fp8Format::E4M3), 0xB8);
  // E4M3: 7.5 * 2^-9 between the largest subnormal (0x07) and the smallest normal (0x08): 0x08.
  EXPECT_EQ(float_to_fp8(std::ldexp(7.5f, -9), Fp8Format::E4M3), 0x08);
  // E5M2: 1.125 between 1 (0x3C) and 1.25 (0x3D): 0x3C; 1.375: 0x3E.
  EXPECT_EQ(float_to_fp8(1.125f, Fp8Format::E5M2), 0x3C);
  EXPECT_EQ(float_to_fp8(1.375f, Fp8Format::E5M2), 0x3E);
}

TEST(Fp8Format, SaturationNaNZeroAndSubnormals) {
  for (Fp8Format f : kFormats) {
    const uint8_t max = fp8_traits(f).max_code;
    const float tiny = fp8_to_float(0x01, f);  // smallest subnormal
    for (float x : {fp8_traits(f).max_finite * 1.01f, 1e30f, FLT_MAX, INFINITY}) {
      EXPECT_EQ(float_to_fp8(x, f), max) << fp8_name(f) << " x=" << x;
      EXPECT_EQ(float_to_fp8(-x, f), 0x80 | max) << fp8_name(f) << " x=" << -x;
    }
    const float qnan = std::numeric_limits<float>::quiet_NaN();
    EXPECT_EQ(float_to_fp8(qnan, f), 0x7F) << fp8_name(f);
    EXPECT_EQ(float_to_fp8(-qnan, f), 0x7F) << fp8_name(f);  // canonical, as CUDA's conversion
    EXPECT_EQ(float_to_fp8(std::numeric_limits<float>::signaling_NaN(), f), 0x7F) << fp8_name(f);
    EXPECT_TRUE(std::isnan(fp8_to_float(float_to_fp8(qnan, f), f))) << fp8_name(f);
    EXPECT_EQ(float_to_fp8(0.0f, f), 0x00);
    EXPECT_EQ(float_to_fp8(-0.0f, f), 0x80) << fp8_name(f) << ": -0 keeps its sign";
    EXPECT_EQ(float_to_fp8(tiny, f), 0x01);
    EXPECT_EQ(float_to_fp8(-tiny, f), 0x81);
    EXPECT_EQ(float_to_fp8(tiny / 2, f), 0x00) << fp8_name(f) << ": half the smallest subnormal ties to 0";
    EXPECT_EQ(float_to_fp8(-tiny / 2, f), 0x80);
    EXPECT_EQ(float_to_fp8(bits_next(tiny / 2, 1), f), 0x01);
    EXPECT_EQ(float_to_fp8(tiny * 1.5f, f), 0x02) << fp8_name(f) << ": 1.5 subnormal steps tie to even 2";
    EXPECT_EQ(float_to_fp8(tiny * 2.5f, f), 0x02) << fp8_name(f) << ": 2.5 subnormal steps tie to even 2";
    EXPECT_EQ(float_to_fp8(tiny / 4, f), 0x00);
    EXPECT_EQ(float_to_fp8(1e-40f, f), 0x00) << fp8_name(f) << ": fp32 subnormals round to zero";
    EXPECT_EQ(float_to_fp8(-1e-40f, f), 0x80);
    EXPECT_EQ(float_to_fp8(FLT_MIN, f), 0x00);
  }
}

TEST(Fp8Scale, PowerOfTwoLargestThatFits) {
  Rng r(5);
  for (Fp8Format f : kFormats) {
    const float max = fp8_traits(f).max_finite;
    std::vector<float> amaxes = {
        max, std::nextafter(max, INFINITY), std::nextafter(max, 0.0f), 1.0f, 0.75f, 1e-3f, 3e4f, 1e-20f, 1e20f};
    for (int i = 0; i < 2000; ++i) amaxes.push_back(float(std::exp(r.uniform(-40.0, 40.0))));
    for (float a : amaxes) {
      const float s = fp8_scale_for_amax(a, f, 0);
      int e = 0;
      EXPECT_EQ(std::frexp(s, &e), 0.5f) << "scale " << s << " is not a power of two (amax " << a << ")";
      EXPECT_LE(double(a) * s, max) << fp8_name(f) << " amax " << a;
      EXPECT_GT(2.0 * a * s, max) << fp8_name(f) << " amax " << a << ": a larger power of two fits";
      EXPECT_EQ(fp8_scale_for_amax(a, f, 3), s / 8) << "margin 3 divides the scale by 2^3 (amax " << a << ")";
      EXPECT_EQ(fp8_scale_for_amax(a, f, -1), 2 * s) << "margin -1 doubles it (amax " << a << ")";
    }
    EXPECT_EQ(fp8_scale_for_amax(max, f, 0), 1.0f);
    EXPECT_EQ(fp8_scale_for_amax(std::nextafter(max, INFINITY), f, 0), 0.5f);
    // No usable amax: scale 1.
    for (float a : {0.0f, -0.0f, -3.0f, INFINITY, -INFINITY, std::numeric_limits<float>::quiet_NaN()})
      EXPECT_EQ(fp8_scale_for_amax(a, f, 0), 1.0f) << fp8_name(f) << " amax " << a;
    // The exponent is clamped to [-120, 120].
    EXPECT_EQ(fp8_scale_for_amax(1e-38f, f, 0), std::ldexp(1.0f, 120));
    EXPECT_EQ(fp8_scale_for_amax(1e-30f, f, -40), std::ldexp(1.0f, 120));
    EXPECT_EQ(fp8_scale_for_amax(3e38f, f, 10), std::ldexp(1.0f, -120));
  }
  EXPECT_EQ(fp8_scale_for_amax(1.0f, Fp8Format::E4M3, 0), 256.0f);      // 256 <= 448 < 512
  EXPECT_EQ(fp8_scale_for_amax(1.0f, Fp8Format::E5M2, 0), 32768.0f);    // 2^15 <= 57344 < 2^16
  EXPECT_EQ(fp8_scale_for_amax(448.0f / 3, Fp8Format::E4M3, 0), 2.0f);  // 298.7 fits, 597 does not
}

TEST(Fp8Scale, AmaxHistoryRing) {
  Fp8AmaxHistory h;
  h.reset(3, 4);
  ASSERT_EQ(h.amax.size(), 12u);
  ASSERT_EQ(h.seen.size(), 3u);
  for (int s = 0; s < 3; ++s) EXPECT_FALSE(h.has_history(s));
  for (float a : {1.0f, 5.0f, 2.0f}) h.record(1, a);
  EXPECT_TRUE(h.has_history(1));
  EXPECT_FALSE(h.has_history(0));
  EXPECT_FALSE(h.has_history(2));
  EXPECT_EQ(h.seen[1], 3);
  EXPECT_EQ(h.max_amax(1), 5.0f);
  // Four more: the ring holds the last four passes only; the 5 (pass 1) has left it.
  for (float a : {0.5f, 0.25f, 0.125f, 0.2f}) h.record(1, a);
  EXPECT_EQ(h.seen[1], 7);
  EXPECT_EQ(h.max_amax(1), 0.5f);
  // Entry [slot * length + pass % length]: passes 4, 5, 6 in entries 0, 1, 2; pass 3 in entry 3.
  EXPECT_EQ(h.amax[4 + 0], 0.25f);
  EXPECT_EQ(h.amax[4 + 1], 0.125f);
  EXPECT_EQ(h.amax[4 + 2], 0.2f);
  EXPECT_EQ(h.amax[4 + 3], 0.5f);
  h.record(1, 0.1f);  // overwrites pass 3's 0.5
  EXPECT_EQ(h.max_amax(1), 0.25f);
  // Other slots untouched.
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(h.amax[i], 0.0f);
    EXPECT_EQ(h.amax[8 + i], 0.0f);
  }
  // Before the ring is full only the recorded entries count (the zeros of the rest are not read).
  h.record(2, 3.0f);
  EXPECT_EQ(h.max_amax(2), 3.0f);
  // reset clears everything.
  h.reset(2, 4);
  EXPECT_EQ(h.seen[0] + h.seen[1], 0);
  EXPECT_FALSE(h.has_history(1));
  // history = 0: current scaling, nothing is recorded.
  Fp8AmaxHistory none;
  none.reset(2, 0);
  none.record(0, 7.0f);
  EXPECT_FALSE(none.has_history(0));
  EXPECT_EQ(none.seen[0], 0);
  EXPECT_THROW(none.reset(-1, 4), Error);
  EXPECT_THROW(none.reset(2, -1), Error);
}

TEST(Fp8Scale, DelayedScaleUsesEarlierPassesThenRecords) {
  using ops::fp8_delayed_scale;
  const Fp8Format f = Fp8Format::E4M3;
  Fp8AmaxHistory h;
  h.reset(2, 3);
  // First pass: no history, the tensor's own amax; recorded.
  EXPECT_EQ(fp8_delayed_scale(h, 0, 1.0f, f, 0), fp8_scale_for_amax(1.0f, f, 0));
  EXPECT_EQ(h.seen[0], 1);
  // Second pass: the scale of the history (1.0), not of the new, larger amax 100.
  EXPECT_EQ(fp8_delayed_scale(h, 0, 100.0f, f, 0), fp8_scale_for_amax(1.0f, f, 0));
  EXPECT_EQ(fp8_delayed_scale(h, 0, 2.0f, f, 0), fp8_scale_for_amax(100.0f, f, 0));
  EXPECT_EQ(fp8_delayed_scale(h, 0, 2.0f, f, 1), fp8_scale_for_amax(100.0f, f, 1));  // margin
  // Ring of 3: pass 4 still sees pass 1's 100 and its record overwrites it; pass 5 sees 2s only.
  EXPECT_EQ(fp8_delayed_scale(h, 0, 2.0f, f, 0), fp8_scale_for_amax(100.0f, f, 0));
  EXPECT_EQ(fp8_delayed_scale(h, 0, 2.0f, f, 0), fp8_scale_for_amax(2.0f, f, 0));
  EXPECT_EQ(h.seen[1], 0);  // the other slot untouched
  // history = 0: current scaling (the tensor's own amax every time).
  Fp8AmaxHistory none;
  none.reset(1, 0);
  EXPECT_EQ(fp8_delayed_scale(none, 0, 1.0f, f, 0), fp8_scale_for_amax(1.0f, f, 0));
  EXPECT_EQ(fp8_delayed_scale(none, 0, 100.0f, f, 0), fp8_scale_for_amax(100.0f, f, 0));
}

namespace {

// Values of every kind the ops meet: normals over a wide range, exact FP8 midpoints, zeros,
// infinities, NaN.
std::vector<float> mixed_values(uint64_t seed, int n) {
  Rng r(seed);
  std::vector<float> v;
  for (int i = 0; i < n; ++i)
    v.push_back(float((r.uniform() < 0.5 ? -1 : 1) * std::ldexp(1.0 + r.uniform(), int(r.uniform(-30.0, 24.0)))));
  for (Fp8Format f : kFormats)
    for (int c = 0; c < fp8_traits(f).max_code; ++c) {
      const float mid = (fp8_to_float(uint8_t(c), f) + fp8_to_float(uint8_t(c + 1), f)) / 2;
      for (float x : {mid, bits_next(mid, 1), bits_next(mid, -1), -mid}) v.push_back(x);
    }
  for (float x : {0.0f, -0.0f, INFINITY, -INFINITY, std::numeric_limits<float>::quiet_NaN(), 1e-40f, FLT_MAX})
    v.push_back(x);
  return v;
}

bool same(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b);
}

}  // namespace

TEST(Fp8Ops, QuantizeDequantizeAndFakeQuantizeAgree) {
  const std::vector<float> x = mixed_values(3, 20000);
  const int64_t n = int64_t(x.size());
  std::vector<uint8_t> q(x.size());
  std::vector<float> deq(x.size()), fake(x.size());
  for (Fp8Format f : kFormats)
    for (float s : {1.0f, 0.25f, 1024.0f, std::ldexp(1.0f, -20), std::ldexp(1.0f, 17)}) {
      ops::fp8_quantize(n, x.data(), s, f, q.data());
      ops::fp8_dequantize(n, q.data(), s, f, deq.data());
      ops::fp8_fake_quantize(n, x.data(), s, f, fake.data());
      int bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        // The bytes are the encoder's; the values decode(q) / s; the fake path the same bits.
        if (q[i] != float_to_fp8(x[i] * s, f) && ++bad <= 5) ADD_FAILURE() << "quantize x=" << x[i];
        if (!same(deq[i], fp8_to_float(q[i], f) / s) && ++bad <= 5) ADD_FAILURE() << "dequantize x=" << x[i];
        if (!same(fake[i], deq[i]) && ++bad <= 5)
          ADD_FAILURE() << fp8_name(f) << " s=" << s << " fake_quantize(" << x[i] << ") = " << fake[i]
                        << ", quantize + dequantize " << deq[i];
      }
      EXPECT_EQ(bad, 0) << fp8_name(f) << " s=" << s;
    }
  // In place.
  std::vector<float> y = x;
  ops::fp8_fake_quantize(n, y.data(), 8.0f, Fp8Format::E4M3, y.data());
  ops::fp8_fake_quantize(n, x.data(), 8.0f, Fp8Format::E4M3, fake.data());
  for (int64_t i = 0; i < n; ++i) ASSERT_TRUE(same(y[i], fake[i])) << i;
  // Saturation through the scale: x * s beyond the largest finite value.
  float out = 0;
  ops::fp8_fake_quantize(1, std::vector<float>{1000.0f}.data(), 1.0f, Fp8Format::E4M3, &out);
  EXPECT_EQ(out, 448.0f);
  // A bad scale names the op.
  kat::test::expect_error([&] { ops::fp8_fake_quantize(1, x.data(), 0.0f, Fp8Format::E4M3, &out); },
                          {"fp8_fake_quantize", "scale"});
  kat::test::expect_error([&] { ops::fp8_quantize(1, x.data(), INFINITY, Fp8Format::E4M3, q.data()); },
                          {"fp8_quantize", "scale"});
}

TEST(Fp8Ops, Amax) {
  EXPECT_EQ(ops::fp8_amax(0, nullptr), 0.0f);
  std::vector<float> v = {0.5f, -3.0f, 2.0f, -0.0f};
  EXPECT_EQ(ops::fp8_amax(4, v.data()), 3.0f);
  v.push_back(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(ops::fp8_amax(5, v.data()), 3.0f) << "NaN is skipped";
  v.push_back(-INFINITY);
  EXPECT_EQ(ops::fp8_amax(6, v.data()), INFINITY);
  // A long buffer (several threads' chunks): the largest wherever it is.
  std::vector<float> w(100003, 1.0f);
  w[77777] = -9.5f;
  EXPECT_EQ(ops::fp8_amax(int64_t(w.size()), w.data()), 9.5f);
}

// The FP8 linear layer against a double computation over hand-quantised inputs: the quantised
// operands must be exactly the encoder's values, and the products their sums up to fp32 GEMM
// rounding: |error| <= 1e-5 * Σ|terms| (K <= 37 terms, fp32 eps 6e-8: at most ~2e-6 of it).
TEST(Fp8Ops, LinearMatchesDoubleOverHandQuantizedInputs) {
  Rng r(21);
  const int64_t M = 37, I = 19, O = 11;
  auto randv = [&](int64_t n, double s) {
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = float(r.normal() * s);
    return v;
  };
  const std::vector<float> x = randv(M * I, 3.0), W = randv(O * I, 0.2), b = randv(O, 0.1),
                           dy = randv(M * O, 1e-3);
  const float s_x = fp8_scale_for_amax(ops::fp8_amax(M * I, x.data()), Fp8Format::E4M3, 0);
  const float s_w = fp8_scale_for_amax(ops::fp8_amax(O * I, W.data()), Fp8Format::E4M3, 0);
  const float s_dy = fp8_scale_for_amax(ops::fp8_amax(M * O, dy.data()), Fp8Format::E5M2, 0);
  auto hand = [](const std::vector<float>& v, float s, Fp8Format f) {
    std::vector<double> q(v.size());
    for (size_t i = 0; i < v.size(); ++i) q[i] = double(fp8_to_float(float_to_fp8(v[i] * s, f), f)) / s;
    return q;
  };
  const auto xq_d = hand(x, s_x, Fp8Format::E4M3), wq_d = hand(W, s_w, Fp8Format::E4M3);
  const auto dyq_d = hand(dy, s_dy, Fp8Format::E5M2);

  std::vector<float> xq(x.size()), wq(W.size()), y(size_t(M * O));
  ops::linear_forward_fp8(M, I, O, x.data(), W.data(), b.data(), s_x, s_w, xq.data(), wq.data(), y.data());
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(double(xq[i]), xq_d[i]) << "xq " << i;
  for (size_t i = 0; i < W.size(); ++i) ASSERT_EQ(double(wq[i]), wq_d[i]) << "wq " << i;
  std::vector<float> y32(y.size());
  ops::linear_forward<float>(M, I, O, x.data(), W.data(), b.data(), y32.data());
  double max_q_effect = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t o = 0; o < O; ++o) {
      double ref = b[o], mag = std::abs(b[o]);
      for (int64_t k = 0; k < I; ++k)
        ref += xq_d[m * I + k] * wq_d[o * I + k], mag += std::abs(xq_d[m * I + k] * wq_d[o * I + k]);
      EXPECT_NEAR(y[m * O + o], ref, 1e-5 * mag) << "y[" << m << "," << o << "]";
      max_q_effect = std::max(max_q_effect, std::abs(double(y32[m * O + o]) - ref) / mag);
    }
  // The test can fail: the fp32 layer (no quantisation) is ~1e-2 of the terms away, not 1e-5.
  EXPECT_GT(max_q_effect, 1e-3);

  // Backward: dx overwritten, dW and db accumulated onto what they held.
  std::vector<float> dyq(dy.size()), dx(x.size(), 7.0f), dW(W.size(), 0.5f), db(size_t(O), -1.0f);
  ops::linear_backward_fp8(M, I, O, xq.data(), wq.data(), dy.data(), s_dy, dyq.data(), dx.data(), dW.data(),
                           db.data());
  for (size_t i = 0; i < dy.size(); ++i) ASSERT_EQ(double(dyq[i]), dyq_d[i]) << "dyq " << i;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < I; ++k) {
      double ref = 0, mag = 0;
      for (int64_t o = 0; o < O; ++o)
        ref += dyq_d[m * O + o] * wq_d[o * I + k], mag += std::abs(dyq_d[m * O + o] * wq_d[o * I + k]);
      EXPECT_NEAR(dx[m * I + k], ref, 1e-5 * mag + 1e-30) << "dx[" << m << "," << k << "]";
    }
  for (int64_t o = 0; o < O; ++o) {
    double dbr = -1.0;
    for (int64_t m = 0; m < M; ++m) dbr += dy[m * O + o];  // the unquantised dy
    EXPECT_NEAR(db[o], dbr, 1e-6) << "db[" << o << "]";
    for (int64_t k = 0; k < I; ++k) {
      double ref = 0.5, mag = 0.5;
      for (int64_t m = 0; m < M; ++m)
        ref += dyq_d[m * O + o] * xq_d[m * I + k], mag += std::abs(dyq_d[m * O + o] * xq_d[m * I + k]);
      EXPECT_NEAR(dW[o * I + k], ref, 1e-5 * mag) << "dW[" << o << "," << k << "]";
    }
  }
  // In place (dyq = dy, xq = x, wq = W) and accumulate_dx: the same numbers.
  std::vector<float> x2 = x, W2 = W, y2(y.size()), dy2 = dy, dx2(x.size(), 0.0f), dW2(W.size(), 0.5f),
                     db2(size_t(O), -1.0f);
  ops::linear_forward_fp8(M, I, O, x2.data(), W2.data(), b.data(), s_x, s_w, x2.data(), W2.data(), y2.data());
  EXPECT_EQ(y2, y);
  ops::linear_backward_fp8(M, I, O, x2.data(), W2.data(), dy2.data(), s_dy, dy2.data(), dx2.data(), dW2.data(),
                           db2.data(), /*accumulate_dx=*/true);
  std::vector<float> dx_fresh(x.size());
  ops::linear_backward_fp8(M, I, O, xq.data(), wq.data(), dy.data(), s_dy, dyq.data(), dx_fresh.data(), nullptr,
                           nullptr);
  EXPECT_EQ(dx2, dx_fresh);
  EXPECT_EQ(dW2, dW);
  EXPECT_EQ(db2, db);
}

namespace {

ModelConfig small_model(const std::string& name) {
  ModelConfig c = ModelConfig::load(name);
  c.depth = 2;
  return c;
}

std::vector<float> random_images(int B, uint64_t seed) {
  Rng r(seed);
  std::vector<float> x(size_t(B) * 28 * 28);
  for (auto& v : x) v = float(r.normal());
  return x;
}

double rel_diff(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]), den += double(b[i]) * b[i];
  return std::sqrt(num / std::max(den, 1e-300));
}

}  // namespace

// Logits of the FP8 forward against fp32, same weights and images (eval: current scaling).
// Bound: E4M3 keeps 3 mantissa bits, so rounding an element changes it by at most 2^-4 of its
// value (half an ulp), about 2^-4 / sqrt(3) = 3.6 % rms for uniformly distributed rounding errors.
// A linear's output sums K products of two rounded operands with independent errors: ~5 % rms
// relative to its rms (sqrt(2) x 3.6 %, not growing with K). Two blocks of four linears, whose
// errors enter the residual stream and add up in quadrature: sqrt(8) x 5 % = 14 %, before the
// LayerNorms and residual connections damp them. The logits must be within 15 % (rms, relative)
// and, so that the test can fail when nothing is quantised, differ by more than 0.1 %.
TEST(Fp8Model, ForwardIsFiniteAndCloseToFp32) {
  for (const char* name : {"kat_micro_patch4_28", "deit_micro_patch4_28"}) {
    const ModelConfig cfg = small_model(name);
    KatModel m32(cfg), m8(cfg);
    m32.init_params(11);
    m8.params = m32.params;
    m8.enable_fp8();
    EXPECT_TRUE(m8.fp8_enabled());
    EXPECT_FALSE(m32.fp8_enabled());
    const int B = 16;
    m32.plan(B);
    m8.plan(B);
    const std::vector<float> x = random_images(B, 12);
    const std::vector<float> l32(m32.forward(x.data(), B), m32.forward(x.data(), B) + B * 10);
    const float* l8 = m8.forward(x.data(), B);
    for (int i = 0; i < B * 10; ++i) ASSERT_TRUE(std::isfinite(l8[i])) << name << " logit " << i;
    EXPECT_EQ(m8.first_nonfinite(), "") << name;
    const double d = rel_diff(l8, l32.data(), l32.size());
    EXPECT_LT(d, 0.15) << name;
    EXPECT_GT(d, 1e-3) << name << ": the FP8 forward equals fp32 (nothing quantised?)";
    std::printf("%s: FP8 logits vs fp32: %.4f relative (rms)\n", name, d);
    // The features (final norm) too: the whole residual stream stays close.
    std::vector<float> f8(m8.features(), m8.features() + size_t(B) * cfg.tokens() * cfg.embed_dim);
    m32.forward(x.data(), B);
    EXPECT_LT(rel_diff(f8.data(), m32.features(), f8.size()), 0.15) << name;
  }
}

// The history advances once per training pass (forward with train = true and its backward: every x
// and dy slot once) and not in eval; eval forwards are deterministic and do not depend on it.
TEST(Fp8Model, HistoryAdvancesOncePerTrainingPass) {
  const ModelConfig cfg = small_model("kat_micro_patch4_28");
  KatModel m(cfg);
  m.init_params(3);
  m.enable_fp8();
  const int B = 4;
  m.plan(B);
  EXPECT_EQ(m.fp8_history_slots(), cfg.depth * ops::kFp8SlotsPerBlock);
  EXPECT_EQ(m.fp8_history_length(), ops::Fp8Recipe{}.history);
  std::vector<float> amax;
  std::vector<int64_t> seen;
  auto seen_all = [&](int64_t want) {
    m.get_fp8_history(amax, seen);
    ASSERT_EQ(seen.size(), size_t(m.fp8_history_slots()));
    for (size_t s = 0; s < seen.size(); ++s) EXPECT_EQ(seen[s], want) << "slot " << s;
  };
  const std::vector<float> x = random_images(B, 4);
  const std::vector<float> e1(m.forward(x.data(), B), m.forward(x.data(), B) + B * 10);
  seen_all(0);  // eval: nothing recorded
  Rng rng(1);
  std::vector<float> dl(size_t(B) * 10, 0.01f);
  for (int pass = 1; pass <= 3; ++pass) {
    m.forward(x.data(), B, true, &rng);
    // x slots are recorded by the forward, dy slots by the backward.
    m.get_fp8_history(amax, seen);
    for (int s = 0; s < m.fp8_history_slots(); ++s) EXPECT_EQ(seen[size_t(s)], s % 2 == 0 ? pass : pass - 1) << s;
    m.backward(dl.data());
    seen_all(pass);
  }
  for (int s = 0; s < m.fp8_history_slots(); ++s)
    EXPECT_GT(amax[size_t(s) * m.fp8_history_length()], 0.0f) << "slot " << s << ": amax of pass 1";
  const std::vector<float> e2(m.forward(x.data(), B), m.forward(x.data(), B) + B * 10);
  seen_all(3);
  EXPECT_EQ(e1, e2) << "eval forwards must not depend on the history";
  // The history round-trips through get/set (checkpoints), and a wrong size is an error.
  KatModel m2(cfg);
  m2.enable_fp8();
  m2.set_fp8_history(amax, seen);
  std::vector<float> a2;
  std::vector<int64_t> s2;
  m2.get_fp8_history(a2, s2);
  EXPECT_EQ(a2, amax);
  EXPECT_EQ(s2, seen);
  seen.pop_back();
  kat::test::expect_error([&] { m2.set_fp8_history(amax, seen); }, {"amax history", "slots"});
  KatModel m32(cfg);
  kat::test::expect_error([&] { m32.get_fp8_history(a2, s2); }, {"FP8 is not enabled"});
}

// A few optimizer steps on one batch in FP8 (the CPU engine, delayed scaling): the loss goes down.
TEST(Fp8Model, TrainingLossDecreases) {
  const ModelConfig cfg = small_model("kat_micro_patch4_28");
  KatModel m(cfg);
  m.init_params(5);
  m.enable_fp8();
  AdamWConfig oc;
  oc.lr = 2e-3;
  CpuEngine e(m, oc);
  const int B = 32;
  const std::vector<float> x = random_images(B, 6);
  std::vector<float> t(size_t(B) * 10, 0.0f);
  Rng r(7);
  for (int b = 0; b < B; ++b) t[size_t(b) * 10 + r.below(10)] = 1.0f;
  std::vector<double> losses;
  Rng dp(8);
  for (int step = 0; step < 8; ++step) {
    e.begin_step();
    e.stage(x.data(), t.data(), B);
    e.compute_staged(1, &dp);
    losses.push_back(e.staged_loss());
    e.finish_step(oc.lr, 0.0);
  }
  for (double l : losses) ASSERT_TRUE(std::isfinite(l));
  EXPECT_LT(losses.back(), 0.9 * losses.front()) << "first " << losses.front() << ", last " << losses.back();
  std::vector<float> amax;
  std::vector<int64_t> seen;
  e.download_fp8_history(amax, seen);
  for (int64_t s : seen) EXPECT_EQ(s, 8);
  // An engine whose model is not in FP8 has no history, and refuses one.
  KatModel m32(cfg);
  CpuEngine e32(m32, oc);
  e32.download_fp8_history(amax, seen);
  EXPECT_TRUE(amax.empty() && seen.empty());
  kat::test::expect_error([&] { e32.upload_fp8_history({1.0f}, {1}); }, {"does not train in FP8"});
}
