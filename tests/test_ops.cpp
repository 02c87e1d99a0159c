// Every CPU op's gradient against central finite differences in float64.
//
// Tolerance: with h = 1e-6 the central difference has truncation error O(h^2 * f''') ~ 1e-12 and
// rounding error O(eps * |f| / h) ~ 1e-10 relative, so analytic and numeric gradients of a correct
// op agree to ~1e-8 relative; 1e-6 leaves margin yet catches any wrong term (errors ~1e-1).
// Inputs are random normals (never zeros); GR-KAN inputs and b_k are nudged away from 0, the kink
// of |x| and sign(b), as flashlight's Jacobian tests do.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <functional>
#include <tuple>
#include <vector>

#include "kat/core/error.h"
#include "kat/core/rng.h"
#include "kat/ops/grkan.h"
#include "ops/cpu_ops.h"

using namespace kat;
using namespace kat::ops;

namespace {

std::vector<double> randn(Rng& r, size_t n, double s = 1.0) {
  std::vector<double> v(n);
  for (auto& x : v) x = r.normal() * s;
  return v;
}

// Checks d(Σ w·f(p))/dp for every entry of p against the analytic gradient `grad`.
void check_fd(const char* what, std::vector<double>& p, const std::vector<double>& grad,
              const std::function<double()>& loss, double tol = 1e-6) {
  ASSERT_EQ(p.size(), grad.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double h = 1e-6 * std::max(1.0, std::abs(p[i])), keep = p[i];
    p[i] = keep + h;
    const double lp = loss();
    p[i] = keep - h;
    const double lm = loss();
    p[i] = keep;
    const double fd = (lp - lm) / (2 * h);
    ASSERT_FALSE(std::isnan(grad[i])) << what << "[" << i << "] is NaN";
    num += (fd - grad[i]) * (fd - grad[i]);
    den += fd * fd;
  }
  const double rel = std::sqrt(num / std::max(den, 1e-300));
  EXPECT_LT(rel, tol) << what << ": relative error " << rel;
  EXPECT_GT(den, 0.0) << what << ": gradient is identically zero (test cannot fail)";
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

TEST(OpsGrad, Linear) {
  Rng r(1);
  const int64_t M = 5, I = 7, O = 4;
  auto x = randn(r, M * I), W = randn(r, O * I), b = randn(r, O), w = randn(r, M * O);
  std::vector<double> y(M * O), dx(M * I), dW(O * I, 0), db(O, 0);
  auto loss = [&] {
    linear_forward<double>(M, I, O, x.data(), W.data(), b.data(), y.data());
    return dot(y, w);
  };
  linear_backward<double>(M, I, O, x.data(), W.data(), w.data(), dx.data(), dW.data(), db.data());
  check_fd("linear dx", x, dx, loss);
  check_fd("linear dW", W, dW, loss);
  check_fd("linear db", b, db, loss);
}

TEST(OpsGrad, LayerNorm) {
  Rng r(2);
  const int64_t M = 6, C = 9;
  auto x = randn(r, M * C, 2.0), g = randn(r, C), b = randn(r, C), w = randn(r, M * C);
  std::vector<double> y(M * C), mean(M), rstd(M), dx(M * C, 0), dg(C, 0), db(C, 0);
  auto loss = [&] {
    layernorm_forward<double>(M, C, 1e-6, x.data(), g.data(), b.data(), y.data(), mean.data(), rstd.data());
    return dot(y, w);
  };
  loss();
  layernorm_backward<double>(M, C, x.data(), g.data(), mean.data(), rstd.data(), w.data(), dx.data(), dg.data(),
                             db.data());
  check_fd("layernorm dx", x, dx, loss);
  check_fd("layernorm dgamma", g, dg, loss);
  check_fd("layernorm dbeta", b, db, loss);
}

TEST(OpsGrad, Attention) {
  Rng r(3);
  const int64_t B = 2, N = 5, D = 8, H = 2;
  auto qkv = randn(r, B * N * 3 * D), w = randn(r, B * N * D);
  std::vector<double> out(B * N * D), probs(B * H * N * N), dqkv(B * N * 3 * D);
  auto loss = [&] {
    attention_forward<double>(B, N, D, H, qkv.data(), out.data(), probs.data());
    return dot(out, w);
  };
  loss();
  attention_backward<double>(B, N, D, H, qkv.data(), probs.data(), w.data(), dqkv.data());
  check_fd("attention dqkv", qkv, dqkv, loss);
  for (int64_t i = 0; i < B * H * N; ++i) {  // rows of P sum to 1
    double s = 0;
    for (int64_t j = 0; j < N; ++j) s += probs[i * N + j];
    EXPECT_NEAR(s, 1.0, 1e-12);
  }
}

TEST(OpsGrad, Gelu) {
  Rng r(4);
  const int64_t n = 50;
  auto x = randn(r, n, 2.0), w = randn(r, n);
  std::vector<double> y(n), dx(n);
  auto loss = [&] {
    gelu_forward<double>(n, x.data(), y.data());
    return dot(y, w);
  };
  gelu_backward<double>(n, x.data(), w.data(), dx.data());
  check_fd("gelu dx", x, dx, loss);
  double y1;
  const double one = 1.0;
  gelu_forward<double>(1, &one, &y1);
  EXPECT_NEAR(y1, 0.8413447460685429, 1e-15);  // 1 * Φ(1)
}

TEST(OpsGrad, SoftmaxXent) {
  Rng r(5);
  const int64_t B = 4, K = 6;
  auto z = randn(r, B * K, 2.0);
  std::vector<double> t(B * K, 0.0), dz(B * K);
  for (int64_t b = 0; b < B; ++b) {  // a mixup-like soft target
    t[b * K + b % K] = 0.7;
    t[b * K + (b + 2) % K] = 0.3;
  }
  auto loss = [&] { return softmax_xent<double>(B, K, z.data(), t.data(), 0.1, nullptr); };
  softmax_xent<double>(B, K, z.data(), t.data(), 0.1, dz.data());
  check_fd("xent dlogits", z, dz, loss);
}

// Params: (numerator rows: 1 shared or G, m, n). (5, 4) runs the vectorized fast path, other
// degrees the generic path.
class GrkanGrad : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(GrkanGrad, AllGradients) {
  const auto [rows, m, n] = GetParam();
  Rng r(6);
  GrkanShape s{7, 12, 4, rows, m, n};
  auto x = randn(r, s.rows * s.dim, 1.5), w = randn(r, s.rows * s.dim);
  for (auto& v : x)
    if (std::abs(v) < 1e-3) v = v < 0 ? -0.1 : 0.1;  // keep away from the |x| kink
  std::vector<double> a, b, a0, b0;
  grkan_init_coefficients("swish", a0, b0);
  for (int g = 0; g < s.num_rows; ++g)
    for (int k = 0; k <= m; ++k) a.push_back((k < 6 ? a0[k] : 0.0) + 0.05 * r.normal());
  for (int g = 0; g < s.groups; ++g)
    for (int k = 0; k < n; ++k) {
      double bv = (k < 4 ? b0[k] : 0.0) + 0.05 * r.normal();
      if (std::abs(bv) < 1e-3) bv = 0.01;  // keep away from the sign(b) kink
      b.push_back(bv);
    }
  std::vector<double> y(x.size()), dx(x.size()), da(a.size(), 0), db(b.size(), 0);
  auto loss = [&] {
    grkan_forward<double>(s, x.data(), a.data(), b.data(), y.data());
    return dot(y, w);
  };
  grkan_backward<double>(s, x.data(), w.data(), a.data(), b.data(), dx.data(), da.data(), db.data());
  check_fd("grkan dx", x, dx, loss);
  check_fd("grkan da", a, da, loss);
  check_fd("grkan db", b, db, loss);
}
INSTANTIATE_TEST_SUITE_P(OpsGrad, GrkanGrad,
                         ::testing::Values(std::make_tuple(1, 5, 4), std::make_tuple(4, 5, 4),
                                           std::make_tuple(1, 3, 2), std::make_tuple(4, 6, 3)));

TEST(Grkan, FastPathMatchesGenericFloat) {
  // The (5,4) fast path and the generic path must agree in float on a realistic shape.
  Rng r(11);
  GrkanShape s{300, 96, 8, 1, 5, 4};
  std::vector<float> x(s.rows * s.dim), g(x.size());
  for (auto& v : x) v = float(r.normal() * 1.5);
  for (auto& v : g) v = float(r.normal());
  std::vector<double> a0, b0;
  grkan_init_coefficients("swish", a0, b0);
  std::vector<float> a(a0.begin(), a0.end()), b;
  for (int i = 0; i < 8; ++i)
    for (double v : b0) b.push_back(float(v + 0.05 * r.normal()));
  std::vector<float> y(x.size()), dx(x.size()), da(6, 0), db(32, 0);
  grkan_forward<float>(s, x.data(), a.data(), b.data(), y.data());
  grkan_backward<float>(s, x.data(), g.data(), a.data(), b.data(), dx.data(), da.data(), db.data());
  // double-precision reference through the generic path (degrees passed as (5,4) in double use the
  // fast path too, so evaluate the formula directly here).
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const int grp = int((i % s.dim) / (s.dim / s.groups));
    double bb[4];
    for (int k = 0; k < 4; ++k) bb[k] = b[grp * 4 + k];
    const double ref = grkan_eval(a0.data(), 5, bb, 4, x[i]);
    num += (y[i] - ref) * (y[i] - ref);
    den += ref * ref;
  }
  EXPECT_LT(std::sqrt(num / den), 1e-6);
}

TEST(Grkan, RejectsBadGrouping) {
  GrkanShape s{1, 10, 8, 1, 5, 4};
  EXPECT_THROW(s.validate("test"), kat::Error);
  GrkanShape s2{1, 16, 8, 3, 5, 4};
  EXPECT_THROW(s2.validate("test"), kat::Error);
}

// The family contracts' shape checks (ops/<family>.h) run in the CPU ops too (the CUDA ops call the
// same functions; their own limits are checked by the GPU tests).
TEST(OpsShapes, SharedChecksRejectBadShapes) {
  std::vector<float> buf(64, 1.0f);
  float* f = buf.data();
  EXPECT_THROW(layernorm_forward<float>(2, 0, 1e-6f, f, f, f, f, f, f), kat::Error);
  EXPECT_THROW(layernorm_backward<float>(-1, 4, f, f, f, f, f, f, f, f), kat::Error);
  EXPECT_THROW(attention_forward<float>(1, 2, 6, 4, f, f, f), kat::Error);      // D % H != 0
  EXPECT_THROW(attention_backward<float>(1, 0, 8, 2, f, f, f, f), kat::Error);  // N = 0
  EXPECT_THROW(softmax_xent<float>(2, 0, f, f, 0.1f, f), kat::Error);
  EXPECT_THROW(softmax_xent<float>(2, 4, f, f, 1.0f, f), kat::Error);  // label smoothing 1
  GrkanShape huge{int64_t(1) << 62, 16, 8, 1, 5, 4};                   // rows * dim overflows
  EXPECT_THROW(huge.validate("test"), kat::Error);
  EXPECT_THROW(gelu_forward<float>(-1, f, f), kat::Error);
  EXPECT_THROW(gelu_backward<float>(-1, f, f, f), kat::Error);
  EXPECT_THROW(scale_rows<float>(2, -1, f, f, f), kat::Error);
  EXPECT_THROW(linear_forward<float>(2, 0, 3, f, f, f, f), kat::Error);                // in = 0
  EXPECT_THROW(linear_backward<float>(2, 3, 0, f, f, f, f, f, f, false), kat::Error);  // out = 0
  EXPECT_THROW(im2col_patches<float>(1, 1, 6, 6, 4, f, f), kat::Error);                // 6 not divisible by 4
  EXPECT_THROW(adamw_step(-1, adamw_scalars(1e-3, 0.9, 0.999, 1e-8, 0.05, 1), f, f, f, f, nullptr), kat::Error);
  EXPECT_THROW(ema_update(-1, f, f, 0.9), kat::Error);
  EXPECT_THROW(clip_grad_norm(int64_t(-1), f, 1.0), kat::Error);
  // Empty shapes are no-ops, not errors.
  gelu_forward<float>(0, f, f);
  linear_forward<float>(0, 3, 2, f, f, f, f);
  scale_rows<float>(0, 4, f, f, f);
}

// The flat-array optimizer ops: AdamW with the shared fp32 scalars (ops/optim.h), EMA, clipping.
TEST(OpsOptim, FlatArrayOps) {
  const auto s = adamw_scalars(1e-2, 0.9, 0.999, 1e-8, 0.1, 1);
  EXPECT_FLOAT_EQ(s.step_size, float(1e-2 / 0.1));
  std::vector<float> p = {1.0f, -2.0f}, g = {0.5f, 0.5f}, m = {0, 0}, v = {0, 0};
  const uint8_t mask[2] = {1, 0};
  adamw_step(2, s, p.data(), g.data(), m.data(), v.data(), mask);
  // Step 1 of Adam moves each weight by ~lr against the gradient's sign; decay only on p[0].
  EXPECT_NEAR(p[0], 1.0f - 1e-2f * 0.1f - 1e-2f, 1e-6);
  EXPECT_NEAR(p[1], -2.0f - 1e-2f, 1e-6);
  std::vector<float> ema = {0.0f, 1.0f}, q = {1.0f, 1.0f};
  ema_update(2, ema.data(), q.data(), 0.75);
  EXPECT_FLOAT_EQ(ema[0], 0.25f);
  EXPECT_FLOAT_EQ(ema[1], 1.0f);
  std::vector<float> gr = {3.0f, 4.0f};
  EXPECT_DOUBLE_EQ(clip_grad_norm(2, gr.data(), 1.0), 5.0);
  EXPECT_NEAR(gr[0], 0.6f, 1e-6);
  EXPECT_NEAR(gr[1], 0.8f, 1e-6);
  EXPECT_THROW(adamw_scalars(1e-3, 0.9, 0.999, 1e-8, 0.0, 0), kat::Error);
}

TEST(Grkan, ForwardMatchesSpecFormula) {
  // F(x) = P/Q with Q = 1 + Σ|b_k||x|^k (A-form), evaluated directly.
  std::vector<double> a = {0.1, 0.9, -0.2, 0.05, 0.01, -0.003}, b = {-0.3, 0.2, 0.05, -0.01};
  GrkanShape s{1, 2, 2, 1, 5, 4};
  std::vector<double> bb = b;
  bb.insert(bb.end(), b.begin(), b.end());
  double x[2] = {-1.7, 2.3}, y[2];
  grkan_forward<double>(s, x, a.data(), bb.data(), y);
  for (int i = 0; i < 2; ++i) {
    double P = 0, Q = 1;
    for (int k = 0; k <= 5; ++k) P += a[k] * std::pow(x[i], k);
    for (int k = 1; k <= 4; ++k) Q += std::abs(b[k - 1]) * std::pow(std::abs(x[i]), k);
    EXPECT_NEAR(y[i], P / Q, 1e-14);
  }
}

TEST(Grkan, SwishInitApproximatesSwish) {
  std::vector<double> a, b;
  grkan_init_coefficients("swish", a, b);
  double mx = 0;
  for (double x = -3; x <= 3; x += 0.01)
    mx = std::max(mx, std::abs(grkan_eval(a.data(), 5, b.data(), 4, x) - x / (1 + std::exp(-x))));
  EXPECT_LT(mx, 2e-2);
}

TEST(Grkan, GeluFitWithin1e2) {
  std::vector<double> a, b;
  grkan_init_coefficients("gelu", a, b);
  double mx = 0;
  for (double x = -3; x <= 3; x += 0.001)
    mx = std::max(
        mx, std::abs(grkan_eval(a.data(), 5, b.data(), 4, x) - 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)))));
  EXPECT_LT(mx, 1e-2);
  // F(3) must be ~3 (the public B-form table gives 1.53 under the A-form).
  EXPECT_NEAR(grkan_eval(a.data(), 5, b.data(), 4, 3.0), 3.0 * 0.99865, 1e-2);
}

TEST(Grkan, IdentityInitIsIdentity) {
  std::vector<double> a, b;
  grkan_init_coefficients("identity", a, b);
  for (double x : {-2.5, -0.3, 0.0, 1.7}) EXPECT_DOUBLE_EQ(grkan_eval(a.data(), 5, b.data(), 4, x), x);
  EXPECT_THROW(grkan_init_coefficients("relu", a, b), kat::Error);
}

TEST(Grkan, CoefficientGradientsDeterministicAcrossThreads) {
  Rng r(9);
  GrkanShape s{1000, 64, 8, 1, 5, 4};
  std::vector<float> x(s.rows * s.dim), g(x.size()), dx(x.size());
  for (auto& v : x) v = float(r.normal());
  for (auto& v : g) v = float(r.normal());
  std::vector<double> a0, b0;
  grkan_init_coefficients("swish", a0, b0);
  std::vector<float> a(a0.begin(), a0.end()), b;
  for (int i = 0; i < 8; ++i) b.insert(b.end(), b0.begin(), b0.end());
  std::vector<float> da1(6, 0), db1(32, 0), da2(6, 0), db2(32, 0);
  grkan_backward<float>(s, x.data(), g.data(), a.data(), b.data(), dx.data(), da1.data(), db1.data());
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);  // a different thread count must give bitwise the same sums
  grkan_backward<float>(s, x.data(), g.data(), a.data(), b.data(), dx.data(), da2.data(), db2.data());
  omp_set_num_threads(threads);
  EXPECT_EQ(da1, da2);
  EXPECT_EQ(db1, db2);
}
