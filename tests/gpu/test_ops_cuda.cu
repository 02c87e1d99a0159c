// Cross-backend check of the CUDA small ops (src/ops/cuda/ops_cuda.h) against the CPU reference
// (kat::ops in src/ops/cpu/norm_cpu.cpp, misc_cpu.cpp; kat::AdamW / ema_update in
// src/train/optim.cpp), in the spirit of ggml's test-backend-ops.
//
// Builds two ways:
//  - in the CMake project (kat_gpu_tests, label gpu) with GoogleTest;
//  - without gtest (the GPU machine has none): bench/gpu_ops_check_main.cu defines
//    KAT_OPS_NO_GTEST and includes this file; the minimal macro layer of gpu_test_util.cuh then
//    provides TEST, EXPECT_*/ASSERT_* and kat_gpu_test::mini::run_tests(). bench/run_ops_h200.sh
//    builds it that way.
//
// Every case draws fresh random inputs (seed printed; never zeros), poisons every output with NaN
// (all-ones bytes) before each run, fails on any NaN/inf, and runs three times on the same inputs:
// every output (the reductions' included) must be bitwise identical across the runs.
//
// Errors are norm-wise, err = ||out - truth|| / ||truth||, where truth is the CPU op evaluated in
// float64 on exactly the values the GPU sees (bf16 inputs: their bf16-rounded values).
// Tolerances, each with its reason:
//  - fp32 outputs (fp32 storage; and mean/rstd, dgamma/dbeta, row losses in any storage):
//    err <= 1e-5. Both sides do fp32 arithmetic (unit roundoff 6e-8) on identical inputs; the
//    deepest chains are the row sums of LayerNorm (C <= 4096 terms, tree-summed) and the
//    dgamma/dbeta column sums over up to 25216 rows (per-thread, per-block, then 16-way strided
//    sums): worst-case growth of a few hundred ulp, typical (random signs) ~1e-7 relative; exp/erf/
//    log of CUDA's libdevice are within 2 ulp. 1e-5 leaves 10-100x room and still catches any
//    wrong index, lost row or lost block (>= 1e-3).
//  - bf16 outputs: the value is the fp32 result rounded once, so its error is dominated by that
//    rounding (<= 2^-9 relative per element, ~2^-9/sqrt(3) rms). Criterion: err(gpu) <= 2 *
//    err(CPU fp32 op on the same bf16 inputs, then rounded to bf16) + 1e-6, i.e. no worse than
//    twice what an ideal fp32 kernel with one final rounding gets (the 1e-6 floor covers outputs
//    that happen to be exactly representable); and, independently, err <= 2^-8 (a bound derived
//    from the half-ulp rounding alone, 2x margin).
//  - AdamW, EMA (fp32 state): compared with the CPU fp32 op itself, err <= 1e-6. Same formula,
//    same operation order, fp32 both sides, no FMA on the GPU side; differences can only come from
//    FMA contraction the host compiler applies (GCC contracts under -march=x86-64-v3), <= 1 ulp per
//    affected operation, i.e. ~1e-7. The fraction of bitwise-identical elements is printed (1.0
//    when the CPU build does not contract). The bf16 copy must equal the rounded fp32 result
//    bitwise.
//  - The mean loss (fp32 scalar) vs the CPU's double: relative 1e-5.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/params.h"
#include "ops/cpu_ops.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/ops_cuda.h"
#include "train/optim.h"

#include "gpu_test_util.cuh"

namespace kat_ops_test {

using kat::cuda::Storage;
using kat_gpu_test::all_finite;
using kat_gpu_test::DevBuf;
using kat_gpu_test::DevTensor;
using kat_gpu_test::download_f32;
using kat_gpu_test::download_storage;
using kat_gpu_test::fresh_seed;
using kat_gpu_test::have_gpu;
using kat_gpu_test::rel_err;
using kat_gpu_test::round_bf16;
using kat_gpu_test::upload_f32;

constexpr double kF32Tol = 1e-5;          // fp32 outputs vs float64 truth
constexpr double kBf16Cap = 1.0 / 256;    // 2^-8: bf16 outputs, absolute cap
constexpr double kBf16Floor = 1e-6;       // floor added to 2x the baseline
constexpr double kOptTol = 1e-6;          // AdamW / EMA vs the CPU fp32 op
constexpr float kEps = 1e-6f;             // LayerNorm eps of the model
constexpr int kReps = 3;                  // runs per case (bitwise determinism)

// KAT_OPS_SMALL=1 (set for compute-sanitizer runs): skip cases of more than 4 M elements.
inline bool skip_large(size_t n) {
  const char* e = std::getenv("KAT_OPS_SMALL");
  if (e && *e && *e != '0' && n > (size_t(1) << 22)) {
    std::printf("    (skipped: %zu elements, KAT_OPS_SMALL)\n", n);
    return true;
  }
  return false;
}

// ---- host helpers ------------------------------------------------------------------------------
inline std::vector<float> round_vec(const std::vector<float>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = round_bf16(v[i]);
  return r;
}
inline std::vector<double> to_d(const std::vector<float>& v) { return {v.begin(), v.end()}; }
inline const char* sname(Storage st) { return st == Storage::F32 ? "f32" : "bf16"; }

// Fast reproducible normal numbers (splitmix64 + Box-Muller): millions per case.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  double normal() {
    const double u1 = uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  // Never exactly zero: a zero input would hide a wrong index.
  float nz_normal(double scale, double offset = 0.0) {
    double v = offset + scale * normal();
    if (v == 0.0) v = 1e-3 * scale;
    return static_cast<float>(v);
  }
};

// A blocking stream: the uploads and NaN poisoning (cudaMemcpy/cudaMemset on the legacy default
// stream, which may return before the copy lands) are ordered before its kernels; ready() also
// synchronises the device explicitly before the ops under test are enqueued.
struct Stream {
  cudaStream_t s = nullptr;
  Stream() { KAT_CUDA_CHECK(cudaStreamCreate(&s)); }
  ~Stream() { cudaStreamDestroy(s); }
  void sync() const { KAT_CUDA_CHECK(cudaStreamSynchronize(s)); }
  void ready() const { KAT_CUDA_CHECK(cudaDeviceSynchronize()); }
};

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

// One output against the float64 truth, with the tolerance of its storage (see the header).
// cpu32: the CPU fp32 op on the same inputs (baseline).
inline void check_out(const std::string& what, const char* name, bool bf16_out,
                      const std::vector<float>& got, const std::vector<double>& truth,
                      const std::vector<float>& cpu32) {
  EXPECT_TRUE(all_finite(got)) << "NaN/inf in " << name << ": " << what;
  const double err = rel_err(got, truth);
  const double base = rel_err(bf16_out ? round_vec(cpu32) : cpu32, truth);
  if (bf16_out) {
    const double tol = 2.0 * base + kBf16Floor;
    EXPECT_LE(err, tol) << name << " (bf16: 2 x baseline " << base << "): " << what;
    EXPECT_LE(err, kBf16Cap) << name << " (bf16 cap 2^-8): " << what;
    std::printf("      %-9s err %.3e  baseline(cpu fp32->bf16) %.3e  ratio %.3f\n", name, err, base,
                base > 0 ? err / base : 0.0);
  } else {
    EXPECT_LE(err, kF32Tol) << name << " (fp32): " << what;
    std::printf("      %-9s err %.3e  cpu fp32 %.3e  tol %.0e\n", name, err, base, kF32Tol);
  }
}

inline void poison_f32(void* d, size_t n) { KAT_CUDA_CHECK(cudaMemset(d, 0xff, n * 4)); }

// Checks that run r's outputs equal run 0's bitwise.
struct RepCheck {
  std::vector<std::vector<float>> first;
  void record(int rep, const std::string& what, std::vector<std::vector<float>> outs,
              const char* const* names) {
    if (rep == 0) {
      first = std::move(outs);
      return;
    }
    for (size_t i = 0; i < outs.size(); ++i)
      EXPECT_TRUE(same_bits(outs[i], first[i]))
          << names[i] << " not bitwise reproducible (run " << rep << "): " << what;
  }
};

// ---- LayerNorm -----------------------------------------------------------------------------------
inline void ln_case(int64_t rows, int C, Storage st, size_t misalign = 0) {
  if (skip_large(static_cast<size_t>(rows) * C)) return;
  const uint64_t seed = fresh_seed();
  const std::string what = "layernorm rows " + std::to_string(rows) + " C " + std::to_string(C) +
                           " " + sname(st) + " misalign " + std::to_string(misalign) + " seed " +
                           std::to_string(seed);
  std::printf("    case: %s\n", what.c_str());
  Rng rng(seed);
  const bool bf = st == Storage::BF16;
  const size_t N = static_cast<size_t>(rows) * C;
  std::vector<float> x(N), dy(N), dx0(N), g(C), b(C), dg0(C), db0(C);
  for (int64_t r = 0; r < rows; ++r) {
    const double off = rng.normal(), sc = 0.5 + rng.uniform() * 2.0;  // per-row shift and scale
    for (int c = 0; c < C; ++c) x[r * C + c] = rng.nz_normal(sc, off);
  }
  for (auto& v : dy) v = rng.nz_normal(1.0);
  for (auto& v : dx0) v = rng.nz_normal(1.0);
  for (auto& v : g) v = rng.nz_normal(0.2, 1.0);
  for (auto& v : b) v = rng.nz_normal(0.2);
  // Initial parameter gradients of the size of the sums (so overwrite-instead-of-add fails).
  const double gsc = std::sqrt(static_cast<double>(rows));
  for (auto& v : dg0) v = rng.nz_normal(gsc);
  for (auto& v : db0) v = rng.nz_normal(gsc);
  if (bf) {
    x = round_vec(x);
    dy = round_vec(dy);
    dx0 = round_vec(dx0);
  }
  // Truth (float64) and baseline (fp32) on the same values.
  std::vector<double> xd = to_d(x), gd = to_d(g), bd = to_d(b), dyd = to_d(dy);
  std::vector<double> yd(N), md(rows), rd(rows), dxd = to_d(dx0), dgd = to_d(dg0), dbd = to_d(db0);
  kat::ops::layernorm_forward<double>(rows, C, static_cast<double>(kEps), xd.data(), gd.data(),
                                      bd.data(), yd.data(), md.data(), rd.data());
  kat::ops::layernorm_backward<double>(rows, C, xd.data(), gd.data(), md.data(), rd.data(),
                                       dyd.data(), dxd.data(), dgd.data(), dbd.data());
  std::vector<float> yf(N), mf(rows), rf(rows), dxf = dx0, dgf = dg0, dbf = db0;
  kat::ops::layernorm_forward<float>(rows, C, kEps, x.data(), g.data(), b.data(), yf.data(),
                                     mf.data(), rf.data());
  kat::ops::layernorm_backward<float>(rows, C, x.data(), g.data(), mf.data(), rf.data(), dy.data(),
                                      dxf.data(), dgf.data(), dbf.data());

  DevTensor dx_t(st, N, misalign), dy_t(st, N, misalign), ddx(st, N, misalign), dyo(st, N, misalign);
  DevBuf dgam(C * 4), dbet(C * 4), dmean(rows * 4), drstd(rows * 4), ddg(C * 4), ddb(C * 4);
  DevBuf ws(std::max<size_t>(kat::cuda::layernorm_backward_workspace_bytes(rows, C), 4));
  dx_t.upload(x);
  dy_t.upload(dy);
  upload_f32(dgam.p, g);
  upload_f32(dbet.p, b);
  Stream s;
  RepCheck rep_check;
  const char* names[] = {"y", "mean", "rstd", "dx_acc", "dgamma", "dbeta"};
  for (int rep = 0; rep < kReps; ++rep) {
    dyo.poison();
    poison_f32(dmean.p, rows);
    poison_f32(drstd.p, rows);
    KAT_CUDA_CHECK(cudaMemset(ws.p, 0xff, ws.bytes));  // stale partials must not matter
    ddx.upload(dx0);
    upload_f32(ddg.p, dg0);
    upload_f32(ddb.p, db0);
    s.ready();
    kat::cuda::layernorm_forward(rows, C, kEps, st, dx_t.ptr(), dgam.as<float>(), dbet.as<float>(),
                                 dyo.ptr(), dmean.as<float>(), drstd.as<float>(), s.s);
    kat::cuda::layernorm_backward(rows, C, st, dx_t.ptr(), dgam.as<float>(), dmean.as<float>(),
                                  drstd.as<float>(), dy_t.ptr(), ddx.ptr(), ddg.as<float>(),
                                  ddb.as<float>(), ws.p, s.s);
    s.sync();
    std::vector<std::vector<float>> outs = {dyo.download(),         download_f32(dmean.as<float>(), rows),
                                            download_f32(drstd.as<float>(), rows), ddx.download(),
                                            download_f32(ddg.as<float>(), C), download_f32(ddb.as<float>(), C)};
    if (rep == 0) {
      check_out(what, "y", bf, outs[0], yd, yf);
      check_out(what, "mean", false, outs[1], md, mf);
      check_out(what, "rstd", false, outs[2], rd, rf);
      check_out(what, "dx_acc", bf, outs[3], dxd, dxf);
      check_out(what, "dgamma", false, outs[4], dgd, dgf);
      check_out(what, "dbeta", false, outs[5], dbd, dbf);
    }
    rep_check.record(rep, what, std::move(outs), names);
  }
}

// ---- GELU ----------------------------------------------------------------------------------------
inline void gelu_case(int64_t n, Storage st, size_t misalign = 0, bool dx_aliases_dy = false) {
  if (skip_large(static_cast<size_t>(n))) return;
  const uint64_t seed = fresh_seed();
  const std::string what = "gelu n " + std::to_string(n) + " " + sname(st) + " misalign " +
                           std::to_string(misalign) + (dx_aliases_dy ? " dx=dy" : "") + " seed " +
                           std::to_string(seed);
  std::printf("    case: %s\n", what.c_str());
  Rng rng(seed);
  const bool bf = st == Storage::BF16;
  std::vector<float> x(n), dy(n);
  for (auto& v : x) v = rng.nz_normal(2.0);
  for (auto& v : dy) v = rng.nz_normal(1.0);
  if (bf) {
    x = round_vec(x);
    dy = round_vec(dy);
  }
  std::vector<double> xd = to_d(x), dyd = to_d(dy), yd(n), dxd(n);
  kat::ops::gelu_forward<double>(n, xd.data(), yd.data());
  kat::ops::gelu_backward<double>(n, xd.data(), dyd.data(), dxd.data());
  std::vector<float> yf(n), dxf(n);
  kat::ops::gelu_forward<float>(n, x.data(), yf.data());
  kat::ops::gelu_backward<float>(n, x.data(), dy.data(), dxf.data());

  DevTensor tx(st, n, misalign), tdy(st, n, misalign), ty(st, n, misalign), tdx(st, n, misalign);
  tx.upload(x);
  Stream s;
  RepCheck rep_check;
  const char* names[] = {"y", "dx"};
  for (int rep = 0; rep < kReps; ++rep) {
    ty.poison();
    tdy.upload(dy);
    void* dxp = dx_aliases_dy ? tdy.ptr() : tdx.ptr();
    if (!dx_aliases_dy) tdx.poison();
    s.ready();
    kat::cuda::gelu_forward(n, st, tx.ptr(), ty.ptr(), s.s);
    kat::cuda::gelu_backward(n, st, tx.ptr(), tdy.ptr(), dxp, s.s);
    s.sync();
    std::vector<std::vector<float>> outs = {ty.download(),
                                            dx_aliases_dy ? tdy.download() : tdx.download()};
    if (rep == 0) {
      check_out(what, "y", bf, outs[0], yd, yf);
      check_out(what, "dx", bf, outs[1], dxd, dxf);
    }
    rep_check.record(rep, what, std::move(outs), names);
  }
}

// ---- softmax cross-entropy -----------------------------------------------------------------------
enum class XentOut { Separate, Null, AliasLogits };

inline void xent_case(int64_t B, int K, Storage st, XentOut mode = XentOut::Separate,
                      size_t misalign = 0) {
  if (skip_large(static_cast<size_t>(B) * K)) return;
  const uint64_t seed = fresh_seed();
  const char* mname = mode == XentOut::Separate ? "" : (mode == XentOut::Null ? " dlogits=null" : " dlogits=logits");
  const std::string what = "softmax_xent B " + std::to_string(B) + " K " + std::to_string(K) + " " +
                           sname(st) + mname + " misalign " + std::to_string(misalign) + " seed " +
                           std::to_string(seed);
  std::printf("    case: %s\n", what.c_str());
  Rng rng(seed);
  const bool bf = st == Storage::BF16;
  const size_t N = static_cast<size_t>(B) * K;
  const float ls = 0.1f;
  std::vector<float> z(N), t(N);
  for (int64_t r = 0; r < B; ++r) {
    const double off = 3.0 * rng.normal();
    for (int k = 0; k < K; ++k) z[r * K + k] = rng.nz_normal(2.0, off);
    // Soft targets: mixup of two classes on even rows, a dense random distribution on odd rows.
    float* tr = t.data() + r * K;
    if (r % 2 == 0) {
      const double lam = 0.3 + 0.4 * rng.uniform();
      std::fill(tr, tr + K, 0.0f);
      const int a = static_cast<int>(rng.next() % K), c = static_cast<int>(rng.next() % K);
      tr[a] += static_cast<float>(lam);
      tr[c] += static_cast<float>(1.0 - lam);
    } else {
      double sum = 0;
      for (int k = 0; k < K; ++k) sum += (tr[k] = static_cast<float>(-std::log(rng.uniform())));
      for (int k = 0; k < K; ++k) tr[k] = static_cast<float>(tr[k] / sum);
    }
  }
  if (bf) z = round_vec(z);
  std::vector<double> zd = to_d(z), td = to_d(t), dzd(N), rld(B);
  const double mean_d = kat::ops::softmax_xent<double>(B, K, zd.data(), td.data(), static_cast<double>(ls),
                                                       dzd.data(), rld.data());
  std::vector<float> dzf(N), rlf(B);
  kat::ops::softmax_xent<float>(B, K, z.data(), t.data(), ls, dzf.data(), rlf.data());

  DevTensor tz(st, N, misalign), tdz(st, N, misalign);
  DevBuf tt((N + misalign) * 4), trl(B * 4), tloss(4);
  float* tgt = tt.as<float>(misalign * 4);
  upload_f32(tgt, t);
  Stream s;
  RepCheck rep_check;
  const char* names[] = {"row_loss", "loss", "dlogits"};
  for (int rep = 0; rep < kReps; ++rep) {
    tz.upload(z);
    tdz.poison();
    poison_f32(trl.p, B);
    poison_f32(tloss.p, 1);
    void* dz = mode == XentOut::Null ? nullptr : (mode == XentOut::AliasLogits ? tz.ptr() : tdz.ptr());
    s.ready();
    kat::cuda::softmax_xent(B, K, st, tz.ptr(), tgt, ls, dz, trl.as<float>(), tloss.as<float>(), s.s);
    s.sync();
    std::vector<std::vector<float>> outs = {download_f32(trl.as<float>(), B), download_f32(tloss.as<float>(), 1)};
    if (mode != XentOut::Null) outs.push_back(mode == XentOut::AliasLogits ? tz.download() : tdz.download());
    if (rep == 0) {
      check_out(what, "row_loss", false, outs[0], rld, rlf);
      EXPECT_TRUE(std::isfinite(outs[1][0])) << "NaN loss: " << what;
      const double lerr = std::abs(outs[1][0] - mean_d) / std::abs(mean_d);
      EXPECT_LE(lerr, kF32Tol) << "mean loss: " << what;
      std::printf("      %-9s err %.3e  (gpu %.7f, cpu double %.7f)\n", "loss", lerr, outs[1][0], mean_d);
      if (mode != XentOut::Null) check_out(what, "dlogits", bf, outs[2], dzd, dzf);
    }
    if (mode == XentOut::Null) {
      EXPECT_TRUE(!all_finite(tdz.download())) << "dlogits written although null: " << what;
    }
    rep_check.record(rep, what, std::move(outs), names);
  }
}

// ---- residual with drop-path / scale_rows --------------------------------------------------------
inline void residual_case(int64_t B, int64_t per, Storage st, bool in_place = false,
                          bool null_scale = false, size_t misalign = 0) {
  if (skip_large(static_cast<size_t>(B) * per)) return;
  const uint64_t seed = fresh_seed();
  const std::string what = "residual/scale_rows B " + std::to_string(B) + " per_sample " +
                           std::to_string(per) + " " + sname(st) + (in_place ? " in-place" : "") +
                           (null_scale ? " scale=null" : "") + " misalign " +
                           std::to_string(misalign) + " seed " + std::to_string(seed);
  std::printf("    case: %s\n", what.c_str());
  Rng rng(seed);
  const bool bf = st == Storage::BF16;
  const size_t N = static_cast<size_t>(B) * per;
  std::vector<float> x(N), f(N), sc(B);
  for (auto& v : x) v = rng.nz_normal(1.0);
  for (auto& v : f) v = rng.nz_normal(1.0);
  for (int64_t b = 0; b < B; ++b) sc[b] = static_cast<float>(0.5 + rng.uniform());
  if (B > 1) sc[1] = 0.0f;  // a dropped sample
  if (null_scale) std::fill(sc.begin(), sc.end(), 1.0f);
  if (bf) {
    x = round_vec(x);
    f = round_vec(f);
  }
  // Residual reference composed of the CPU ops, as the CPU model does: y = x + scale_rows(f).
  std::vector<double> xd = to_d(x), fd = to_d(f), sd = to_d(sc), yd(N), srd(N);
  kat::ops::scale_rows<double>(B, per, sd.data(), fd.data(), yd.data());
  for (size_t i = 0; i < N; ++i) yd[i] += xd[i];
  kat::ops::scale_rows<double>(B, per, sd.data(), xd.data(), srd.data());
  std::vector<float> yf(N), srf(N);
  kat::ops::scale_rows<float>(B, per, sc.data(), f.data(), yf.data());
  for (size_t i = 0; i < N; ++i) yf[i] += x[i];
  kat::ops::scale_rows<float>(B, per, sc.data(), x.data(), srf.data());

  DevTensor tx(st, N, misalign), tf(st, N, misalign), ty(st, N, misalign), ts(st, N, misalign);
  DevBuf dsc(B * 4);
  upload_f32(dsc.p, sc);
  tf.upload(f);
  const float* scp = null_scale ? nullptr : dsc.as<float>();
  Stream s;
  RepCheck rep_check;
  const char* names[] = {"y", "scaled"};
  for (int rep = 0; rep < kReps; ++rep) {
    tx.upload(x);
    ty.poison();
    ts.poison();
    s.ready();
    // scale_rows first (reads x), then the residual (in place: y = x).
    kat::cuda::scale_rows(B, per, st, dsc.as<float>(), tx.ptr(), ts.ptr(), s.s);
    void* yp = in_place ? tx.ptr() : ty.ptr();
    kat::cuda::residual_add(B, per, st, tx.ptr(), tf.ptr(), scp, yp, s.s);
    s.sync();
    std::vector<std::vector<float>> outs = {in_place ? tx.download() : ty.download(), ts.download()};
    if (rep == 0) {
      check_out(what, "y", bf, outs[0], yd, yf);
      check_out(what, "scaled", bf, outs[1], srd, srf);
    }
    rep_check.record(rep, what, std::move(outs), names);
  }
  // In-place scale_rows (the backward's usual form).
  tx.upload(x);
  s.ready();
  kat::cuda::scale_rows(B, per, st, dsc.as<float>(), tx.ptr(), tx.ptr(), s.s);
  s.sync();
  EXPECT_TRUE(same_bits(tx.download(), rep_check.first[1])) << "in-place scale_rows differs: " << what;
}

// ---- AdamW / EMA ---------------------------------------------------------------------------------
inline double bit_equal_fraction(const std::vector<float>& a, const std::vector<float>& b) {
  size_t eq = 0;
  for (size_t i = 0; i < a.size(); ++i) eq += std::memcmp(&a[i], &b[i], 4) == 0;
  return a.empty() ? 1.0 : static_cast<double>(eq) / a.size();
}

inline void adamw_case(int64_t n, bool with_bf16, bool no_decay = false, size_t misalign = 0) {
  if (skip_large(static_cast<size_t>(n))) return;
  const uint64_t seed = fresh_seed();
  const std::string what = "adamw+ema n " + std::to_string(n) + (with_bf16 ? " +bf16 copy" : "") +
                           (no_decay ? " mask=null" : "") + " misalign " + std::to_string(misalign) +
                           " seed " + std::to_string(seed);
  std::printf("    case: %s\n", what.c_str());
  Rng rng(seed);
  // Parameter table with every kind (decay on Weight and Rational), in chunks.
  kat::ParamTable table;
  const kat::ParamKind kinds[] = {kat::ParamKind::Weight, kat::ParamKind::Bias, kat::ParamKind::Norm,
                                  kat::ParamKind::Rational, kat::ParamKind::Embed};
  const int64_t chunk = std::max<int64_t>(1, n / 7);
  for (int64_t off = 0, i = 0; off < n; ++i) {
    const int64_t len = std::min(chunk + (i % 3), n - off);
    table.add("p" + std::to_string(i), {len}, no_decay ? kat::ParamKind::Bias : kinds[i % 5]);
    off += len;
  }
  kat::AdamWConfig cfg;
  cfg.lr = 1e-3 * (0.5 + rng.uniform());
  cfg.weight_decay = 0.05;
  kat::AdamW opt(table, cfg);
  std::vector<float> p(n), g(n), ema(n);
  for (auto& v : p) v = rng.nz_normal(0.05);
  for (auto& v : g) v = rng.nz_normal(1e-2);
  for (auto& v : opt.m) v = rng.nz_normal(1e-3);
  for (auto& v : opt.v) v = static_cast<float>(std::abs(rng.nz_normal(1e-4)) + 1e-9);
  for (auto& v : ema) v = rng.nz_normal(0.05);
  const int64_t t0 = 1 + static_cast<int64_t>(rng.next() % 50);
  opt.set_steps(t0);
  const std::vector<float> m0 = opt.m, v0 = opt.v;
  std::vector<uint8_t> mask = opt.decay_mask();
  const double lr = cfg.lr;
  std::vector<float> pc = p;
  opt.step(pc.data(), g.data(), lr);  // CPU: step t0 + 1
  const double decay = 0.9998;
  std::vector<float> emac = ema;
  kat::ema_update(emac, pc, decay);

  const auto sc = kat::cuda::adamw_scalars(lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay, t0 + 1);
  const size_t pad = misalign * 4;
  DevBuf dp(n * 4 + 16), dg(n * 4 + 16), dm(n * 4 + 16), dv(n * 4 + 16), dmask(n + 16),
      dbf(n * 2 + 16), dema(n * 4 + 16);
  float* pp = dp.as<float>(pad);
  float* gp = dg.as<float>(pad);
  float* mp = dm.as<float>(pad);
  float* vp = dv.as<float>(pad);
  float* ep = dema.as<float>(pad);
  uint8_t* kp = dmask.as<uint8_t>(misalign);
  void* bp = dbf.as<char>(misalign * 2);
  KAT_CUDA_CHECK(cudaMemcpy(kp, mask.data(), n, cudaMemcpyHostToDevice));
  upload_f32(gp, g);
  Stream s;
  RepCheck rep_check;
  const char* names[] = {"params", "m", "v", "ema", "bf16"};
  for (int rep = 0; rep < kReps; ++rep) {
    upload_f32(pp, p);
    upload_f32(mp, m0);
    upload_f32(vp, v0);
    upload_f32(ep, ema);
    KAT_CUDA_CHECK(cudaMemset(bp, 0xff, n * 2));
    s.ready();
    kat::cuda::adamw_step(n, sc, pp, gp, mp, vp, no_decay ? nullptr : kp, with_bf16 ? bp : nullptr, s.s);
    kat::cuda::ema_update(n, ep, pp, decay, s.s);
    s.sync();
    std::vector<float> bfv(n);
    if (with_bf16) bfv = download_storage(bp, n, Storage::BF16);
    std::vector<std::vector<float>> outs = {download_f32(pp, n), download_f32(mp, n), download_f32(vp, n),
                                            download_f32(ep, n), bfv};
    if (rep == 0) {
      const std::vector<float>* ref[] = {&pc, &opt.m, &opt.v, &emac};
      for (int i = 0; i < 4; ++i) {
        EXPECT_TRUE(all_finite(outs[i])) << "NaN/inf in " << names[i] << ": " << what;
        const double err = rel_err(outs[i], *ref[i]);
        EXPECT_LE(err, kOptTol) << names[i] << ": " << what;
        std::printf("      %-9s err vs cpu fp32 %.3e  bitwise-equal %.6f\n", names[i], err,
                    bit_equal_fraction(outs[i], *ref[i]));
      }
      if (with_bf16) {
        EXPECT_TRUE(same_bits(outs[4], round_vec(outs[0]))) << "bf16 copy != round(params): " << what;
      }
    }
    rep_check.record(rep, what, std::move(outs), names);
  }
}

}  // namespace kat_ops_test

using kat_ops_test::adamw_case;
using kat_ops_test::gelu_case;
using kat_ops_test::ln_case;
using kat_ops_test::residual_case;
using kat_ops_test::xent_case;
using kat_ops_test::XentOut;
using kat::cuda::Storage;

// ---- LayerNorm -----------------------------------------------------------------------------------
TEST(OpsCuda, LayerNormSmallAndOdd) {
  REQUIRE_GPU();
  for (Storage st : {Storage::F32, Storage::BF16}) {
    ln_case(3, 64, st);
    ln_case(1000, 192, st);
    ln_case(129, 1000, st);
    ln_case(33, 771, st);  // C not a multiple of the vector: scalar path
    ln_case(5, 1, st);     // C = 1: y = beta, dx = 0
  }
}

TEST(OpsCuda, LayerNormModelShape) {
  REQUIRE_GPU();
  for (Storage st : {Storage::BF16, Storage::F32}) ln_case(128 * 197, 768, st);
}

TEST(OpsCuda, LayerNormWide) {
  REQUIRE_GPU();
  for (Storage st : {Storage::BF16, Storage::F32}) {
    ln_case(77, 4096, st);
    ln_case(3, 4095, st);  // widest scalar row
    ln_case(301, 2048, st);
  }
}

TEST(OpsCuda, LayerNormMisaligned) {
  REQUIRE_GPU();
  for (Storage st : {Storage::F32, Storage::BF16}) ln_case(100, 768, st, 1);
}

// ---- GELU ----------------------------------------------------------------------------------------
TEST(OpsCuda, Gelu) {
  REQUIRE_GPU();
  for (Storage st : {Storage::F32, Storage::BF16}) {
    gelu_case(3, st);
    gelu_case(1000 * 192 + 5, st);  // vector body + scalar tail
    gelu_case(128 * 197 * 768, st);
    gelu_case(4097, st, 1);         // misaligned: scalar path
    gelu_case(1000 * 64 + 3, st, 0, true);  // dx aliases dy
  }
}

// ---- softmax cross-entropy -----------------------------------------------------------------------
TEST(OpsCuda, SoftmaxXent) {
  REQUIRE_GPU();
  for (Storage st : {Storage::F32, Storage::BF16}) {
    xent_case(3, 1000, st);
    xent_case(128, 1000, st);
    xent_case(1000, 192, st);
    xent_case(7, 64, st);
    xent_case(9, 1001, st);          // odd K: scalar path
    xent_case(5, 20001, st);         // wider than registers: loop kernel
    xent_case(128 * 197, 768, st);
  }
}

TEST(OpsCuda, SoftmaxXentOutputs) {
  REQUIRE_GPU();
  for (Storage st : {Storage::F32, Storage::BF16}) {
    xent_case(64, 1000, st, XentOut::Null);
    xent_case(64, 1000, st, XentOut::AliasLogits);
    xent_case(33, 1000, st, XentOut::Separate, 1);  // misaligned
  }
}

// ---- residual / scale_rows -----------------------------------------------------------------------
TEST(OpsCuda, ResidualDropPath) {
  REQUIRE_GPU();
  for (Storage st : {Storage::F32, Storage::BF16}) {
    residual_case(3, 13 * 64 + 1, st);       // odd per-sample size: scalar path
    residual_case(7, 197 * 192, st);
    residual_case(128, 197 * 768, st);
    residual_case(5, 197 * 64, st, true);    // y aliases x
    residual_case(4, 1000, st, false, true); // no drop-path (scale null)
    residual_case(6, 800, st, false, false, 1);  // misaligned
  }
}

// ---- AdamW / EMA ---------------------------------------------------------------------------------
TEST(OpsCuda, AdamWAndEma) {
  REQUIRE_GPU();
  adamw_case(3, true);
  adamw_case(1000003, true);
  adamw_case(5717411, false);  // ~ kat_tiny's parameter count
  adamw_case(4099, true, true);        // no decay mask
  adamw_case(10001, true, false, 1);   // misaligned: scalar path
}

// ---- arguments -----------------------------------------------------------------------------------
TEST(OpsCuda, RejectsBadArguments) {
  REQUIRE_GPU();
  kat_ops_test::DevBuf buf(1 << 16);
  float* f = buf.as<float>();
  EXPECT_THROW(kat::cuda::layernorm_forward(4, 0, kat_ops_test::kEps, Storage::F32, f, f, f, f, f, f, nullptr),
               kat::Error);
  EXPECT_THROW(kat::cuda::layernorm_forward(4, 4097, kat_ops_test::kEps, Storage::BF16, f, f, f, f, f, f, nullptr),
               kat::Error);
  EXPECT_THROW(kat::cuda::layernorm_backward_workspace_bytes(4, 5000), kat::Error);
  EXPECT_THROW(kat::cuda::layernorm_backward(4, 64, Storage::F32, f, f, f, f, f, f, f, f, nullptr, nullptr),
               kat::Error);  // null workspace
  EXPECT_THROW(kat::cuda::softmax_xent(4, 0, Storage::F32, f, f, 0.f, f, f, nullptr, nullptr), kat::Error);
  EXPECT_THROW(kat::cuda::softmax_xent(4, 10, Storage::F32, f, f, 1.f, f, f, nullptr, nullptr), kat::Error);
  EXPECT_THROW(kat::cuda::softmax_xent(4, 10, Storage::F32, f, f, 0.f, f, nullptr, nullptr, nullptr),
               kat::Error);  // row_loss required
  EXPECT_THROW(kat::cuda::scale_rows(4, 10, Storage::F32, nullptr, f, f, nullptr), kat::Error);
  EXPECT_THROW(kat::cuda::gelu_forward(-1, Storage::F32, f, f, nullptr), kat::Error);
  EXPECT_THROW(kat::cuda::adamw_scalars(1e-3, 0.9, 0.999, 1e-8, 0.05, 0), kat::Error);
}

TEST(OpsCuda, ZeroSizeIsANoOp) {
  REQUIRE_GPU();
  kat_ops_test::DevBuf buf(64);
  std::vector<float> ones(16, 1.f);
  kat_ops_test::upload_f32(buf.p, ones);
  float* f = buf.as<float>();
  EXPECT_EQ(kat::cuda::layernorm_backward_workspace_bytes(0, 768), 0u);
  kat::cuda::layernorm_forward(0, 768, kat_ops_test::kEps, Storage::BF16, f, f, f, f, f, f, nullptr);
  kat::cuda::layernorm_backward(0, 768, Storage::BF16, f, f, f, f, f, f, f, f, nullptr, nullptr);
  kat::cuda::gelu_forward(0, Storage::F32, f, f, nullptr);
  kat::cuda::gelu_backward(0, Storage::F32, f, f, f, nullptr);
  kat::cuda::softmax_xent(0, 10, Storage::F32, f, f, 0.f, f, f, f, nullptr);
  kat::cuda::residual_add(0, 10, Storage::F32, f, f, f, f, nullptr);
  kat::cuda::scale_rows(3, 0, Storage::F32, f, f, f, nullptr);
  kat::cuda::adamw_step(0, kat::cuda::adamw_scalars(1e-3, 0.9, 0.999, 1e-8, 0.05, 1), f, f, f, f,
                        nullptr, nullptr, nullptr);
  kat::cuda::ema_update(0, f, f, 0.999, nullptr);
  KAT_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(kat_ops_test::download_f32(f, 16) == ones);
}
