// "Mimetic" attention initialisation used by the public KAT code (init = "timm"), after Trockman &
// Kolter (2023): per head h, choose W_q, W_k so that W_q^T W_k ≈ α1·Z + β1·I and W_v, W_proj so
// that W_v^T W_proj^T ≈ α2·Z + β2·I, with Z ~ N(0, 1/D) and (α1, β1) = (0.7, 0.7),
// (α2, β2) = (0.4, -0.4) (docs/MODEL.md §3). Each target M (D x D) is factorised by an SVD
// M = U S V^T and its best rank-hd part split evenly: W_q = sqrt(S_hd) U_hd^T, W_k = sqrt(S_hd) V_hd^T.
#include <cmath>
#include <vector>

#include "kat/core/error.h"
#include "kat/core/rng.h"
#include "model/mimetic_init.h"

extern "C" void dgesvd_(const char* jobu, const char* jobvt, const int* m, const int* n, double* a, const int* lda,
                        double* s, double* u, const int* ldu, double* vt, const int* ldvt, double* work,
                        const int* lwork, int* info);

namespace kat {

namespace {

// M (D x D, row-major) = U diag(S) V^T; returns U and V row-major (D x D) and S descending.
void svd(int D, const std::vector<double>& M, std::vector<double>& U, std::vector<double>& S,
         std::vector<double>& V) {
  // LAPACK is column-major: it sees A = M^T = U' S V'^T, hence M = V' S U'^T: U = V', V = U'.
  std::vector<double> a = M, uc(size_t(D) * D), vt(size_t(D) * D);
  S.assign(D, 0.0);
  int info = 0, lwork = -1;
  double q = 0;
  dgesvd_("A", "A", &D, &D, a.data(), &D, S.data(), uc.data(), &D, vt.data(), &D, &q, &lwork, &info);
  lwork = int(q);
  std::vector<double> work(std::max(1, lwork));
  dgesvd_("A", "A", &D, &D, a.data(), &D, S.data(), uc.data(), &D, vt.data(), &D, work.data(), &lwork, &info);
  KAT_CHECK(info == 0, "mimetic init: SVD failed (LAPACK info ", info, ")");
  U.resize(size_t(D) * D);
  V.resize(size_t(D) * D);
  for (int i = 0; i < D; ++i)
    for (int j = 0; j < D; ++j) {
      U[size_t(i) * D + j] = vt[size_t(j) + size_t(i) * D];  // V'(i, j) = (V'^T)(j, i)
      V[size_t(i) * D + j] = uc[size_t(i) + size_t(j) * D];  // U'(i, j)
    }
}

std::vector<double> target(int D, double alpha, double beta, Rng& rng) {
  std::vector<double> M(size_t(D) * D);
  const double s = 1.0 / std::sqrt(double(D));
  for (int i = 0; i < D; ++i)
    for (int j = 0; j < D; ++j) M[size_t(i) * D + j] = alpha * rng.normal() * s + (i == j ? beta : 0.0);
  return M;
}

}  // namespace

void mimetic_attention_init(int D, int heads, float* qkv_w, float* proj_w, Rng& rng) {
  const int hd = D / heads;
  std::vector<double> U, S, V;
  for (int h = 0; h < heads; ++h) {
    svd(D, target(D, 0.7, 0.7, rng), U, S, V);
    for (int r = 0; r < hd; ++r) {  // row h*hd + r of W_q and of W_k
      const double sr = std::sqrt(S[r]);
      float* wq = qkv_w + size_t(h * hd + r) * D;
      float* wk = qkv_w + size_t(D + h * hd + r) * D;
      for (int c = 0; c < D; ++c) {
        wq[c] = float(sr * U[size_t(c) * D + r]);
        wk[c] = float(sr * V[size_t(c) * D + r]);
      }
    }
    svd(D, target(D, 0.4, -0.4, rng), U, S, V);
    for (int r = 0; r < hd; ++r) {
      const double sr = std::sqrt(S[r]);
      float* wv = qkv_w + size_t(2 * D + h * hd + r) * D;
      for (int c = 0; c < D; ++c) {
        wv[c] = float(sr * U[size_t(c) * D + r]);                               // W_v = sqrt(S) U^T
        proj_w[size_t(c) * D + h * hd + r] = float(sr * V[size_t(c) * D + r]);  // W_proj[:, head] = V sqrt(S)
      }
    }
  }
}

}  // namespace kat
