// OpHarness cases of the grkan family (contract, math and shape check ops/grkan.h; CPU
// ops/cpu/grkan.cpp; CUDA ops/cuda/grkan.cu): forward + backward (with the fused dx column sums,
// fc1's bias gradient in the model) against kat::ops::grkan_forward/backward<float> on exactly the
// values the GPU sees.
// Tolerances (each with its reason):
//  - fp32, y and dx: ||gpu-ref||/||ref|| <= 1e-5, and per element |gpu-ref| <= 1e-5 |ref| + 1e-5
//    rms(ref). Both sides do fp32 math on identical inputs; they differ by the order of operations
//    (FMA contraction, powers vs Horner) and the GPU's rcp.approx (<= 1 ulp), i.e. a few ulp of the
//    largest term of P, Q (~1e-6 relative), which cancellation in P near its roots (x ~ -7: terms
//    ~18, P ~ 0.05) turns into an absolute error that the rms floor covers.
//  - bf16, y and dx: the GPU result is the fp32 value rounded once to bf16, at most half an ulp =
//    2^-8 relative. Norm-wise 8e-3 (2x the worst case), per element 2^-8 |ref| + 1e-5 rms(ref).
//  - f16 (the Python op's fp16, the op's only user of F16): the same with half's 11-bit
//    significand, half an ulp = 2^-11 relative: norm-wise 1e-3 (2x the worst case), per element
//    2^-10 |ref| + 1e-5 rms(ref) (which also covers half's subnormal spacing 2^-24).
//  - da, db (always fp32): norm-wise 1e-4. Sums of up to millions of terms (GPU: fp32 per-thread and
//    per-warp partials, double across warps; CPU: double per chunk); per-term differences ~1e-6
//    relative and the sums cancel (random dy), so a few 1e-6; 1e-4 still catches a lost block or
//    a missing group (>= 1e-2).
//  - dx column sums: per column |gpu - ref| <= tol * sum_rows |dx| + 1e-5 with tol 3e-5 (fp32 sums
//    of the fp32 dx when fused, ~1e-6 from the CPU's per element) or 4e-3 for bf16 (the unfused
//    path sums the stored, bf16-rounded dx: 2^-9 relative per element) and 5e-4 for f16 (the
//    stored f16 dx: 2^-12 relative per element).
// Extra: the same backward without the column sums gives dx, da, db bitwise equal (the fused
// kernel computes the same values); grkan_launch_info reports the expected vector path.
#pragma once

#include <random>

#include "../op_harness.cuh"
#include "ops/cpu/grkan.h"
#include "ops/cuda/grkan.h"

namespace kat_op_harness {

using kat::ops::GrkanShape;

// docs/MODEL.md swish initial coefficients.
constexpr double kSwishA[6] = {3.054879741161051e-07, 0.5000007853744493,   0.24999783422824703,
                               0.05326628273219478,   0.005803034571292244, 0.0002751961022402342};
constexpr double kSwishB[4] = {-4.111554955950634e-06, 0.10652899335007572, -1.2690007399796238e-06,
                               0.0005502331264140556};

// Coefficients: swish + noise for degrees (5, 4); for other degrees the swish values where they
// exist and small decaying random values past them. Never zero (a zero would hide a wrong index).
inline void make_grkan_coefficients(const GrkanShape& s, std::mt19937_64& rng, std::vector<float>& a,
                                    std::vector<float>& b) {
  std::normal_distribution<double> nd(0.0, 1.0);
  a.resize(static_cast<size_t>(s.num_rows) * (s.m + 1));
  b.resize(static_cast<size_t>(s.groups) * s.n);
  for (int r = 0; r < s.num_rows; ++r)
    for (int k = 0; k <= s.m; ++k) {
      const double base = k < 6 ? kSwishA[k] : 1e-5 / k;
      const double scale = std::pow(0.3, k);  // noise shrinks with the power of x
      double v = base + 0.05 * scale * nd(rng);
      if (v == 0.0) v = 1e-7;
      a[r * (s.m + 1) + k] = static_cast<float>(v);
    }
  for (int g = 0; g < s.groups; ++g)
    for (int k = 0; k < s.n; ++k) {
      const double base = k < 4 ? kSwishB[k] : 1e-5 / (k + 1);
      const double scale = std::pow(0.3, k + 1);
      double v = base + 0.05 * scale * nd(rng);  // b1, b3 change sign between groups
      if (v == 0.0) v = 1e-7;
      b[g * s.n + k] = static_cast<float>(v);
    }
}

struct GrkanCaseSpec {
  int64_t rows = 1001;
  int dim = 768;
  int groups = 8;
  int num_rows = 1;
  int m = 5, n = 4;
  DType st = DType::F32;
  size_t misalign = 0;  // element offset of x, y, dy, dx from a 256-byte boundary
  bool alias_dx_dy = false;
  int expect_vec = -1;  // launch_info vector width to expect (-1: don't check)
};

class GrkanCase : public OpInstance {
 public:
  GrkanCase(uint64_t seed, const GrkanCaseSpec& c)
      : c_(c),
        N_(size_t(c.rows) * c.dim),
        x_t_(c.st, N_, c.misalign),
        dy_t_(c.st, N_, c.misalign),
        y_t_(c.st, N_, c.misalign),
        dx_t_(c.st, N_, c.misalign),
        cs_(size_t(c.dim) * 4) {
    s_.rows = c.rows;
    s_.dim = c.dim;
    s_.groups = c.groups;
    s_.num_rows = c.num_rows;
    s_.m = c.m;
    s_.n = c.n;
    std::mt19937_64 rng(seed);
    const bool bf = c.st == DType::BF16, half = c.st == DType::F16;
    std::vector<float> x(N_), a, b;
    dy_.resize(N_);
    std::normal_distribution<float> nx(0.f, 1.5f), ng(0.f, 1.f);
    for (auto& v : x) v = kat_gpu_test::round_to(c.st, nx(rng));
    for (auto& v : dy_) v = kat_gpu_test::round_to(c.st, ng(rng));
    make_grkan_coefficients(s_, rng, a, b);
    // CPU reference (fp32 math on exactly the values the GPU sees).
    std::vector<float> y_ref(N_), dx_ref(N_);
    kat::ops::grkan_forward<float>(s_, x.data(), a.data(), b.data(), y_ref.data());
    std::vector<float> da0(a.size(), 0.f), db0(b.size(), 0.f);
    kat::ops::grkan_backward<float>(s_, x.data(), dy_.data(), a.data(), b.data(), dx_ref.data(), da0.data(),
                                    db0.data());
    // Non-zero initial da/db of the gradients' own size, so that overwriting instead of
    // accumulating fails the 1e-4 check by orders of magnitude.
    da_init_.resize(a.size());
    db_init_.resize(b.size());
    for (size_t i = 0; i < a.size(); ++i) da_init_[i] = 0.5f * da0[(i + 1) % a.size()] + 0.25f;
    for (size_t i = 0; i < b.size(); ++i) db_init_[i] = 0.5f * db0[(i + 1) % b.size()] - 0.25f;
    std::vector<float> da_ref = da_init_, db_ref = db_init_, dx_tmp(N_);
    kat::ops::grkan_backward<float>(s_, x.data(), dy_.data(), a.data(), b.data(), dx_tmp.data(), da_ref.data(),
                                    db_ref.data());
    // dx column sums accumulated onto a non-zero start; scale = sum |dx| per column.
    cs_init_.resize(size_t(c.dim));
    std::vector<double> cs_ref(cs_init_.size()), cs_scale(cs_init_.size(), 0.0);
    for (size_t j = 0; j < cs_init_.size(); ++j) cs_ref[j] = cs_init_[j] = 0.1f * float(j % 7) - 0.3f;
    for (int64_t r = 0; r < c.rows; ++r)
      for (int j = 0; j < c.dim; ++j) {
        cs_ref[size_t(j)] += dx_ref[size_t(r) * c.dim + j];
        cs_scale[size_t(j)] += std::fabs(dx_ref[size_t(r) * c.dim + j]);
      }
    a_ = DevBuf(std::max<size_t>(a.size(), 1) * 4);
    b_ = DevBuf(std::max<size_t>(b.size(), 1) * 4);
    da_ = DevBuf(std::max<size_t>(a.size(), 1) * 4);
    db_ = DevBuf(std::max<size_t>(b.size(), 1) * 4);
    ws_ = DevBuf(std::max<size_t>(kat::cuda::grkan_backward_workspace_bytes(s_), 4));
    x_t_.upload(x);
    upload_f32(a_.p, a);
    if (!b.empty()) upload_f32(b_.p, b);

    Tolerance tv;
    tv.norm = bf ? 8e-3 : half ? 1e-3 : 1e-5;
    tv.elementwise = true;
    tv.rtol = bf ? 1.0 / 256 : half ? 1.0 / 1024 : 1e-5;
    tv.atol_rms = 1e-5;
    tv.reason = bf     ? "bf16: one rounding of the fp32 value (<= 2^-8), 2x margin"
                : half ? "f16: one rounding of the fp32 value (<= 2^-11), 2x margin"
                       : "fp32: operation order and rcp.approx, a few ulp of the largest term";
    Tolerance tc;
    tc.norm = 1e-4;
    tc.reason = "coefficient sums of up to millions of fp32 terms, ~1e-6; 1e-4 catches a lost block";
    auto add = [&](const char* name, void* dev, DType t, const std::vector<float>& ref, const Tolerance& tol) {
      Output o;
      o.name = name;
      o.dev = dev;
      o.n = ref.size();
      o.dtype = t;
      o.ref = to_d(ref);
      o.tol = tol;
      outputs.push_back(std::move(o));
    };
    add("y", y_t_.ptr(), c.st, y_ref, tv);
    add("dx", c.alias_dx_dy ? dy_t_.ptr() : dx_t_.ptr(), c.st, dx_ref, tv);
    add("da", da_.p, DType::F32, da_ref, tc);
    if (!b.empty()) add("db", db_.p, DType::F32, db_ref, tc);
    Output cs;
    cs.name = "dx colsum";
    cs.dev = cs_.p;
    cs.n = cs_init_.size();
    cs.ref = std::move(cs_ref);
    cs.scale = std::move(cs_scale);
    cs.tol.elementwise = true;
    cs.tol.scale_tol = bf ? 4e-3 : half ? 5e-4 : 3e-5;
    cs.tol.abs = 1e-5;
    cs.tol.reason =
        "column sums relative to sum |dx|: fp32 sums (3e-5), or of the bf16 / f16-rounded dx (4e-3 / 5e-4)";
    outputs.push_back(std::move(cs));
    const double es = double(kat::dtype_size(c.st));
    bytes = N_ * es * 2 + N_ * es * 3;  // fwd: x, y; bwd: x, dy, dx
  }
  void reset() override {
    upload_f32(da_.p, da_init_);
    if (!db_init_.empty()) upload_f32(db_.p, db_init_);
    dy_t_.upload(dy_);                                   // dx may overwrite dy: restore it
    KAT_CUDA_CHECK(cudaMemset(ws_.p, 0xff, ws_.bytes));  // stale partials must not matter
    upload_f32(cs_.p, cs_init_);
  }
  void run(cudaStream_t s) override { run_op(s, true); }
  void extra_checks(const std::vector<std::vector<float>>& outs, Report& r, cudaStream_t s) override {
    if (c_.expect_vec >= 0) {
      const bool aligned = c_.misalign * kat::dtype_size(c_.st) % 16 == 0;
      const auto info = kat::cuda::grkan_launch_info(s_, c_.st, true, aligned);
      r.check(info.vec == c_.expect_vec,
              "launch_info vec " + std::to_string(info.vec) + ", expected " + std::to_string(c_.expect_vec));
    }
    // Without the column sums: dx, da, db bitwise those of the fused run.
    for (size_t i = 1; i + 1 < outputs.size(); ++i) poison(outputs[i]);
    reset();
    KAT_CUDA_CHECK(cudaDeviceSynchronize());
    run_op(s, false);
    KAT_CUDA_CHECK(cudaStreamSynchronize(s));
    for (size_t i = 1; i + 1 < outputs.size(); ++i)
      r.check(same_bits(download(outputs[i]), outs[i]),
              outputs[i].name + " differs between the backward with and without dx column sums");
  }

 private:
  void run_op(cudaStream_t s, bool colsum) {
    kat::cuda::grkan_forward(s_, c_.st, x_t_.ptr(), a_.as<float>(), b_.as<float>(), y_t_.ptr(), s);
    kat::cuda::grkan_backward({.shape = s_,
                               .dtype = c_.st,
                               .x = x_t_.ptr(),
                               .dy = dy_t_.ptr(),
                               .a = a_.as<float>(),
                               .b = b_.as<float>(),
                               .dx = c_.alias_dx_dy ? dy_t_.ptr() : dx_t_.ptr(),
                               .da = da_.as<float>(),
                               .db = db_.as<float>(),
                               .workspace = ws_.p,
                               .dx_colsum = colsum ? cs_.as<float>() : nullptr},
                              s);
  }
  GrkanCaseSpec c_;
  GrkanShape s_;
  size_t N_;
  DevTensor x_t_, dy_t_, y_t_, dx_t_;
  DevBuf cs_, a_{1}, b_{1}, da_{1}, db_{1}, ws_{1};
  std::vector<float> dy_, da_init_, db_init_, cs_init_;
};

inline std::vector<OpCase> grkan_cases() {
  std::vector<OpCase> v;
  auto add = [&](const GrkanCaseSpec& c) {
    OpCase oc;
    oc.family = "grkan";
    oc.name = "rows " + std::to_string(c.rows) + " D " + std::to_string(c.dim) + " G " + std::to_string(c.groups) +
              " An " + std::to_string(c.num_rows) + " deg (" + std::to_string(c.m) + "," + std::to_string(c.n) +
              ") " + dname(c.st) + (c.misalign ? " misaligned" : "") + (c.alias_dx_dy ? " dx=dy" : "");
    oc.elements = size_t(c.rows) * c.dim;
    oc.make = [=](uint64_t seed) { return std::make_unique<GrkanCase>(seed, c); };
    v.push_back(std::move(oc));
  };
  GrkanCaseSpec c;
  // Shared numerator, odd rows.
  c.rows = 1001;
  c.st = DType::F32;
  c.expect_vec = 4;
  add(c);
  c.st = DType::BF16;
  c.expect_vec = 8;
  add(c);
  // Per-group numerator.
  for (DType st : {DType::F32, DType::BF16}) {
    c = {};
    c.rows = 257;
    c.dim = 192;
    c.num_rows = 8;
    c.st = st;
    add(c);
  }
  // Many grid-stride trips per thread and a real model's width (kat_tiny, FFN input side).
  for (DType st : {DType::BF16, DType::F32}) {
    c = {};
    c.rows = 128 * 197;
    c.dim = 192;
    c.st = st;
    add(c);
  }
  // Wide, few rows and a single row.
  for (int64_t rows : {1, 3, 77}) {
    c = {};
    c.rows = rows;
    c.dim = 3072;
    c.st = DType::BF16;
    add(c);
  }
  // (D/G) % vec != 0: scalar fallback.
  for (DType st : {DType::F32, DType::BF16}) {
    c = {};
    c.rows = 333;
    c.dim = 120;  // D/G = 15
    c.st = st;
    c.expect_vec = 1;
    add(c);
  }
  c = {};  // D/G = 12: 16-byte path for fp32 (4 | 12) but not for bf16 (8 does not divide 12)
  c.rows = 129;
  c.dim = 96;
  c.st = DType::BF16;
  c.expect_vec = 1;
  add(c);
  c.st = DType::F32;
  c.expect_vec = 4;
  add(c);
  // Pointers off a 16-byte boundary: scalar fallback, same results.
  for (DType st : {DType::F32, DType::BF16}) {
    c = {};
    c.rows = 211;
    c.dim = 768;
    c.st = st;
    c.misalign = 1;
    c.expect_vec = 1;
    add(c);
  }
  // dx aliases dy.
  for (DType st : {DType::F32, DType::BF16}) {
    c = {};
    c.rows = 500;
    c.dim = 384;
    c.st = st;
    c.alias_dx_dy = true;
    add(c);
  }
  // Degrees other than (5, 4): generic kernel.
  const int degs[][2] = {{3, 2}, {6, 6}, {0, 3}, {4, 0}, {8, 8}};
  for (const auto& d : degs) {
    c = {};
    c.rows = 301;
    c.dim = 192;
    c.num_rows = (d[0] % 2 == 0) ? 8 : 1;
    c.m = d[0];
    c.n = d[1];
    c.st = (d[1] % 2 == 0) ? DType::F32 : DType::BF16;
    add(c);
  }
  // A partial table wider than one pass of the block reduction (128 columns): 16 groups x (9 + 8)
  // = 272 columns, three passes; and 32 groups of width 8 (the vector).
  for (int groups : {16, 32}) {
    c = {};
    c.rows = 515;
    c.dim = 256;
    c.groups = groups;
    c.num_rows = groups;
    c.m = 8;
    c.n = 8;
    c.st = groups == 16 ? DType::BF16 : DType::F32;
    add(c);
  }
  // Bitwise determinism on a large problem (many blocks, many trips).
  for (DType st : {DType::BF16, DType::F32}) {
    c = {};
    c.rows = 8191;
    c.dim = 768;
    c.st = st;
    add(c);
  }
  // f16 (the Python op's): the vector path, per-group numerator, scalar fallback, misaligned
  // pointers, dx aliasing dy, the generic kernel, and a large problem.
  const DType h = DType::F16;
  c = {.rows = 1001, .st = h, .expect_vec = 8};
  add(c);
  c = {.rows = 257, .dim = 192, .num_rows = 8, .st = h};
  add(c);
  c = {.rows = 333, .dim = 120, .st = h, .expect_vec = 1};
  add(c);
  c = {.rows = 211, .dim = 768, .st = h, .misalign = 1, .expect_vec = 1};
  add(c);
  c = {.rows = 500, .dim = 384, .st = h, .alias_dx_dy = true};
  add(c);
  c = {.rows = 301, .dim = 192, .m = 3, .n = 2, .st = h};
  add(c);
  c = {.rows = 8191, .dim = 768, .st = h};
  add(c);
  return v;
}

}  // namespace kat_op_harness
