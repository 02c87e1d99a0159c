// GR-KAN: group-rational activation, the op that replaces KAT's MLP activations; the op family's
// contract for both backends (CPU: ops/cpu/grkan.h, CUDA: ops/cuda/grkan.h; test: the OpHarness
// cases "grkan_*" in tests/gpu/test_op_harness.cu, CPU gradients in tests/test_ops.cpp).
//
//   x: (rows, D) channels last; D split into G contiguous groups of D/G channels.
//   P(x) = Σ_{k=0..m} a_k x^k                 a: (An, m+1), An = 1 (shared) or G (per group)
//   Q(x) = 1 + Σ_{k=1..n} |b_k| |x|^k         b: (G, n)    row g, column k-1 multiplies |x|^k
//   F(x) = P / Q                              (Q >= 1, so the division is safe)
// Gradients (g = dL/dy; sign(0) := +1, also for sign(b_k)):
//   dx   = g (R Q - S P) / Q^2      R = P'(x), S = sign(x) Σ k |b_k| |x|^(k-1)
//   da_k = Σ g x^k / Q             (over every element of the group; of all groups when shared)
//   db_k = Σ g (-P/Q^2) sign(b_k) |x|^k
// The coefficient reductions are deterministic: rows are cut into a fixed number of chunks that
// does not depend on the thread count, each chunk sums in double, chunks are added in order.
#pragma once
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kat/core/error.h"

namespace kat::ops {

struct GrkanShape {
  int64_t rows = 0;                     // product of all leading dims (batch * tokens)
  int dim = 0;                          // D, channels
  int groups = 8;                       // G
  int num_rows = 1;                     // An: 1 (shared numerator) or G
  int m = 5;                            // numerator degree (m+1 coefficients)
  int n = 4;                            // denominator degree (n coefficients)
  static constexpr int kMaxDegree = 8;  // both backends
  // Throws kat::Error naming the problem (D % G != 0, bad An, degrees out of range, size overflow).
  // The one shape check of the op, called by both backends.
  void validate(const std::string& where) const {
    KAT_CHECK(rows >= 0, where, ": GR-KAN rows must be >= 0, got ", rows);
    KAT_CHECK(dim > 0 && groups > 0, where, ": GR-KAN needs dim > 0 and groups > 0 (dim ", dim, ", groups ",
              groups, ")");
    KAT_CHECK(dim % groups == 0, where, ": GR-KAN width ", dim, " is not divisible by groups ", groups);
    KAT_CHECK(num_rows == 1 || num_rows == groups, where, ": GR-KAN numerator must have 1 or ", groups,
              " rows, got ", num_rows);
    KAT_CHECK(m >= 0 && m <= kMaxDegree && n >= 0 && n <= kMaxDegree, where, ": GR-KAN degrees (", m, ", ", n,
              ") out of range [0, ", kMaxDegree, "]");
    KAT_CHECK(rows <= std::numeric_limits<int64_t>::max() / dim, where, ": GR-KAN size overflows");
  }
};

// Scalar evaluation of one group's rational, for plots and fitting (double precision).
double grkan_eval(const double* a, int m, const double* b, int n, double x);

// Initial coefficients. mode: "identity", "swish" (docs/MODEL.md values) or "gelu" (least-squares fit,
// computed once). Writes a (m+1 = 6 values) and b (n = 4 values) for degrees (5, 4).
void grkan_init_coefficients(const std::string& mode, std::vector<double>& a, std::vector<double>& b);

// Least-squares A-form fit of f on [lo, hi]: linearised fit of P - f*Q on a grid, then
// Gauss-Newton refinement of the true residual P/Q - f. Returns the max abs error on the grid.
double grkan_fit(double (*f)(double), double lo, double hi, int m, int n, std::vector<double>& a,
                 std::vector<double>& b);

}  // namespace kat::ops
