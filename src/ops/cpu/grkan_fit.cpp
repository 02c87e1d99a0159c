// Initial GR-KAN coefficients: docs/MODEL.md's identity and swish tables, and an A-form least-squares
// fitter for any other activation (the public "gelu" table was fitted in B-form and is wrong under
// the A-form, so GELU is fitted here).
#include <cmath>
#include <mutex>
#include <vector>

#include "kat/core/error.h"
#include "kat/ops/grkan.h"

namespace kat::ops {

namespace {

// Solve the dense system A x = y in place (Gaussian elimination, partial pivoting). n <= ~20.
bool solve(std::vector<double> A, std::vector<double> y, int n, std::vector<double>& x) {
  for (int c = 0; c < n; ++c) {
    int p = c;
    for (int r = c + 1; r < n; ++r)
      if (std::abs(A[r * n + c]) > std::abs(A[p * n + c])) p = r;
    if (std::abs(A[p * n + c]) < 1e-300) return false;
    if (p != c) {
      for (int k = 0; k < n; ++k) std::swap(A[c * n + k], A[p * n + k]);
      std::swap(y[c], y[p]);
    }
    for (int r = c + 1; r < n; ++r) {
      const double f = A[r * n + c] / A[c * n + c];
      for (int k = c; k < n; ++k) A[r * n + k] -= f * A[c * n + k];
      y[r] -= f * y[c];
    }
  }
  x.assign(n, 0.0);
  for (int r = n - 1; r >= 0; --r) {
    double t = y[r];
    for (int k = r + 1; k < n; ++k) t -= A[r * n + k] * x[k];
    x[r] = t / A[r * n + r];
  }
  return true;
}

// Least squares min ||J p - r||^2 + lambda ||p||^2 via the normal equations.
bool least_squares(const std::vector<double>& J, const std::vector<double>& r, int rows, int cols, double lambda,
                   std::vector<double>& p) {
  std::vector<double> A(cols * cols, 0.0), y(cols, 0.0);
  for (int i = 0; i < rows; ++i)
    for (int a = 0; a < cols; ++a) {
      y[a] += J[i * cols + a] * r[i];
      for (int b = 0; b < cols; ++b) A[a * cols + b] += J[i * cols + a] * J[i * cols + b];
    }
  for (int a = 0; a < cols; ++a) A[a * cols + a] += lambda * (1.0 + A[a * cols + a]);
  return solve(A, y, cols, p);
}

double max_err(double (*f)(double), const std::vector<double>& xs, const std::vector<double>& a, int m,
               const std::vector<double>& b, int n) {
  double e = 0;
  for (double x : xs) e = std::max(e, std::abs(grkan_eval(a.data(), m, b.data(), n, x) - f(x)));
  return e;
}

double sq_err(double (*f)(double), const std::vector<double>& xs, const std::vector<double>& a, int m,
              const std::vector<double>& b, int n) {
  double e = 0;
  for (double x : xs) {
    const double d = grkan_eval(a.data(), m, b.data(), n, x) - f(x);
    e += d * d;
  }
  return e;
}

double gelu_exact(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

}  // namespace

double grkan_fit(double (*f)(double), double lo, double hi, int m, int n, std::vector<double>& a,
                 std::vector<double>& b) {
  KAT_CHECK(hi > lo && m >= 0 && n >= 0, "grkan_fit: bad interval or degrees");
  const int npts = 1201;
  std::vector<double> xs(npts);
  for (int i = 0; i < npts; ++i) xs[i] = lo + (hi - lo) * i / (npts - 1);
  // 1) Linearised fit: P(x) - f(x) * Σ c_k |x|^k = f(x), unknowns (a_0..a_m, c_1..c_n).
  const int cols = m + 1 + n;
  std::vector<double> J(npts * cols), r(npts), p;
  for (int i = 0; i < npts; ++i) {
    const double x = xs[i], fx = f(x);
    double xp = 1;
    for (int k = 0; k <= m; ++k, xp *= x) J[i * cols + k] = xp;
    double axp = std::abs(x);
    for (int k = 1; k <= n; ++k, axp *= std::abs(x)) J[i * cols + m + k] = -fx * axp;
    r[i] = fx;
  }
  KAT_CHECK(least_squares(J, r, npts, cols, 1e-12, p), "grkan_fit: singular linear system");
  a.assign(p.begin(), p.begin() + m + 1);
  b.assign(p.begin() + m + 1, p.end());
  for (double& v : b) v = std::abs(v);
  // 2) Levenberg-Marquardt on the true residual P/Q - f.
  double lambda = 1e-3, cur = sq_err(f, xs, a, m, b, n);
  for (int it = 0; it < 200; ++it) {
    for (int i = 0; i < npts; ++i) {
      const double x = xs[i];
      double P = 0, Q = 1, xp = 1;
      for (int k = 0; k <= std::max(m, n); ++k, xp *= x) {
        if (k <= m) P += a[k] * xp;
        if (k >= 1 && k <= n) Q += std::abs(b[k - 1]) * std::abs(xp);
      }
      xp = 1;
      for (int k = 0; k <= m; ++k, xp *= x) J[i * cols + k] = xp / Q;
      double axp = std::abs(x);
      for (int k = 1; k <= n; ++k, axp *= std::abs(x))
        J[i * cols + m + k] = -P / (Q * Q) * (b[k - 1] >= 0 ? 1.0 : -1.0) * axp;
      r[i] = f(x) - P / Q;
    }
    if (!least_squares(J, r, npts, cols, lambda, p)) break;
    std::vector<double> a2 = a, b2 = b;
    for (int k = 0; k <= m; ++k) a2[k] += p[k];
    for (int k = 0; k < n; ++k) b2[k] += p[m + 1 + k];
    const double e2 = sq_err(f, xs, a2, m, b2, n);
    if (e2 < cur) {
      a = a2;
      b = b2;
      const double rel = (cur - e2) / (cur + 1e-300);
      cur = e2;
      lambda = std::max(lambda * 0.3, 1e-12);
      if (rel < 1e-12) break;
    } else {
      lambda *= 10;
      if (lambda > 1e8) break;
    }
  }
  return max_err(f, xs, a, m, b, n);
}

void grkan_init_coefficients(const std::string& mode, std::vector<double>& a, std::vector<double>& b) {
  if (mode == "identity") {
    a = {0, 1, 0, 0, 0, 0};
    b = {0, 0, 0, 0};
  } else if (mode == "swish") {
    a = {3.054879741161051e-07, 0.5000007853744493,   0.24999783422824703,
         0.05326628273219478,   0.005803034571292244, 0.0002751961022402342};
    b = {-4.111554955950634e-06, 0.10652899335007572, -1.2690007399796238e-06, 0.0005502331264140556};
  } else if (mode == "gelu") {
    static std::once_flag once;
    static std::vector<double> ga, gb;
    std::call_once(once, [] { grkan_fit(gelu_exact, -3.0, 3.0, 5, 4, ga, gb); });
    a = ga;
    b = gb;
  } else {
    throw Error("unknown GR-KAN init '" + mode + "' (expected identity, swish or gelu)");
  }
}

}  // namespace kat::ops
