// OpHarness cases of the elementwise family (CPU ops/cpu/elementwise.cpp; CUDA
// ops/cuda/elementwise.cu): GELU forward + backward; residual add with drop-path and scale_rows;
// in-place division.
#pragma once

#include "../op_harness.cuh"
#include "ops/cpu/elementwise.h"
#include "ops/cuda/elementwise.h"

namespace kat_op_harness {

class GeluCase : public OpInstance {
 public:
  GeluCase(uint64_t seed, int64_t n, DType st, size_t misalign, bool dx_aliases_dy)
      : n_(n),
        st_(st),
        alias_(dx_aliases_dy),
        x_t_(st, n, misalign),
        dy_t_(st, n, misalign),
        y_t_(st, n, misalign),
        dx_t_(st, n, misalign) {
    Rng rng(seed);
    std::vector<float> x(n);
    dy_.resize(n);
    for (auto& v : x) v = rng.nz_normal(2.0);
    for (auto& v : dy_) v = rng.nz_normal(1.0);
    if (st == DType::BF16) {
      x = round_vec(x);
      dy_ = round_vec(dy_);
    }
    std::vector<double> xd = to_d(x), dyd = to_d(dy_), yd(n), dxd(n);
    kat::ops::gelu_forward<double>(n, xd.data(), yd.data());
    kat::ops::gelu_backward<double>(n, xd.data(), dyd.data(), dxd.data());
    std::vector<float> yf(n), dxf(n);
    kat::ops::gelu_forward<float>(n, x.data(), yf.data());
    kat::ops::gelu_backward<float>(n, x.data(), dy_.data(), dxf.data());
    x_t_.upload(x);
    outputs.push_back(small_op_output("y", y_t_.ptr(), st, std::move(yd), yf));
    outputs.push_back(small_op_output("dx", alias_ ? dy_t_.ptr() : dx_t_.ptr(), st, std::move(dxd), dxf));
    bytes = double(n) * kat::dtype_size(st) * 5;  // fwd: x, y; bwd: x, dy, dx
  }
  void reset() override { dy_t_.upload(dy_); }  // dx may overwrite dy
  void run(cudaStream_t s) override {
    kat::cuda::gelu_forward(n_, st_, x_t_.ptr(), y_t_.ptr(), s);
    kat::cuda::gelu_backward(n_, st_, x_t_.ptr(), dy_t_.ptr(), alias_ ? dy_t_.ptr() : dx_t_.ptr(), s);
  }

 private:
  int64_t n_;
  DType st_;
  bool alias_;
  DevTensor x_t_, dy_t_, y_t_, dx_t_;
  std::vector<float> dy_;
};

// y = x + scale * f (residual_add; in place: y is x) and scaled = scale * x (scale_rows), on the
// same inputs; reference composed of the CPU ops as the CPU model does: y = x + scale_rows(f).
class ResidualCase : public OpInstance {
 public:
  ResidualCase(uint64_t seed, int64_t B, int64_t per, DType st, bool in_place, bool null_scale, size_t misalign)
      : B_(B),
        per_(per),
        st_(st),
        in_place_(in_place),
        null_scale_(null_scale),
        N_(size_t(B) * per),
        x_t_(st, N_, misalign),
        f_t_(st, N_, misalign),
        y_t_(st, N_, misalign),
        s_t_(st, N_, misalign),
        sc_(B * 4) {
    Rng rng(seed);
    x_.resize(N_);
    std::vector<float> f(N_), sc(B);
    for (auto& v : x_) v = rng.nz_normal(1.0);
    for (auto& v : f) v = rng.nz_normal(1.0);
    for (int64_t b = 0; b < B; ++b) sc[b] = static_cast<float>(0.5 + rng.uniform());
    if (B > 1) sc[1] = 0.0f;  // a dropped sample
    if (null_scale) std::fill(sc.begin(), sc.end(), 1.0f);
    if (st == DType::BF16) {
      x_ = round_vec(x_);
      f = round_vec(f);
    }
    std::vector<double> xd = to_d(x_), fd = to_d(f), sd = to_d(sc), yd(N_), srd(N_);
    kat::ops::scale_rows<double>(B, per, sd.data(), fd.data(), yd.data());
    for (size_t i = 0; i < N_; ++i) yd[i] += xd[i];
    kat::ops::scale_rows<double>(B, per, sd.data(), xd.data(), srd.data());
    std::vector<float> yf(N_), srf(N_);
    kat::ops::scale_rows<float>(B, per, sc.data(), f.data(), yf.data());
    for (size_t i = 0; i < N_; ++i) yf[i] += x_[i];
    kat::ops::scale_rows<float>(B, per, sc.data(), x_.data(), srf.data());
    upload_f32(sc_.p, sc);
    f_t_.upload(f);
    outputs.push_back(small_op_output("y", in_place ? x_t_.ptr() : y_t_.ptr(), st, std::move(yd), yf));
    outputs.push_back(small_op_output("scaled", s_t_.ptr(), st, std::move(srd), srf));
    bytes = double(N_) * kat::dtype_size(st) * 5;  // residual: x, f, y; scale_rows: x, y
  }
  void reset() override { x_t_.upload(x_); }  // y may overwrite x
  void run(cudaStream_t s) override {
    // scale_rows first (reads x), then the residual (in place: y = x).
    kat::cuda::scale_rows(B_, per_, st_, sc_.as<float>(), x_t_.ptr(), s_t_.ptr(), s);
    kat::cuda::residual_add(B_, per_, st_, x_t_.ptr(), f_t_.ptr(), null_scale_ ? nullptr : sc_.as<float>(),
                            in_place_ ? x_t_.ptr() : y_t_.ptr(), s);
  }
  // In-place scale_rows (the backward's usual form) gives the out-of-place result bit for bit.
  void extra_checks(const std::vector<std::vector<float>>& outs, Report& r, cudaStream_t s) override {
    x_t_.upload(x_);
    KAT_CUDA_CHECK(cudaDeviceSynchronize());
    kat::cuda::scale_rows(B_, per_, st_, sc_.as<float>(), x_t_.ptr(), x_t_.ptr(), s);
    KAT_CUDA_CHECK(cudaStreamSynchronize(s));
    r.check(same_bits(x_t_.download(), outs[1]), "in-place scale_rows differs from out-of-place");
  }

 private:
  int64_t B_, per_;
  DType st_;
  bool in_place_, null_scale_;
  size_t N_;
  DevTensor x_t_, f_t_, y_t_, s_t_;
  DevBuf sc_;
  std::vector<float> x_;
};

// x /= divisor in place (divide_inplace: the dlogits of one micro-batch divided by the number of
// accumulation steps), bitwise equal to the CPU trainer's `dz /= accum`: fp32, one IEEE division
// on both sides (no fast math on either); bf16, the fp32 quotient of the bf16 value rounded once
// to nearest even (round_bf16 on the host, __float2bfloat16_rn on the device).
class DivideCase : public OpInstance {
 public:
  DivideCase(uint64_t seed, int64_t n, DType st, float divisor)
      : n_(n), st_(st), divisor_(divisor), x_t_(st, size_t(n)) {
    Rng rng(seed);
    x_.resize(size_t(n));
    for (auto& v : x_) v = rng.nz_normal(1.0);
    if (st == DType::BF16) x_ = round_vec(x_);
    std::vector<double> ref(x_.size());
    for (size_t i = 0; i < x_.size(); ++i) {
      const float q = x_[i] / divisor;
      ref[i] = st == DType::BF16 ? round_bf16(q) : q;
    }
    Output o;
    o.name = "x";
    o.dev = x_t_.ptr();
    o.n = size_t(n);
    o.dtype = st;
    o.ref = std::move(ref);
    o.tol.bitwise = true;
    o.tol.reason = "the same IEEE fp32 division (and one round-to-nearest-even for bf16) as the CPU";
    outputs.push_back(std::move(o));
    bytes = double(n) * kat::dtype_size(st) * 2;
  }
  void reset() override { x_t_.upload(x_); }  // in place: the input is the output
  void run(cudaStream_t s) override { kat::cuda::divide_inplace(n_, st_, x_t_.ptr(), divisor_, s); }

 private:
  int64_t n_;
  DType st_;
  float divisor_;
  DevTensor x_t_;
  std::vector<float> x_;
};

inline std::vector<OpCase> elementwise_cases() {
  std::vector<OpCase> v;
  auto gelu = [&](int64_t n, DType st, size_t misalign = 0, bool alias = false) {
    OpCase c;
    c.family = "elementwise";
    c.name = "gelu n " + std::to_string(n) + " " + dname(st) + (misalign ? " misaligned" : "") +
             (alias ? " dx=dy" : "");
    c.elements = size_t(n);
    c.make = [=](uint64_t seed) { return std::make_unique<GeluCase>(seed, n, st, misalign, alias); };
    v.push_back(std::move(c));
  };
  auto resid =
      [&](int64_t B, int64_t per, DType st, bool in_place = false, bool null_scale = false, size_t misalign = 0) {
    OpCase c;
    c.family = "elementwise";
    c.name = "residual/scale_rows B " + std::to_string(B) + " per_sample " + std::to_string(per) + " " +
             dname(st) + (in_place ? " in-place" : "") + (null_scale ? " scale=null" : "") +
             (misalign ? " misaligned" : "");
    c.elements = size_t(B) * per;
    c.make = [=](uint64_t seed) {
      return std::make_unique<ResidualCase>(seed, B, per, st, in_place, null_scale, misalign);
    };
    v.push_back(std::move(c));
  };
  for (DType st : {DType::F32, DType::BF16}) {
    gelu(3, st);
    gelu(1000 * 192 + 5, st);  // vector body + scalar tail
    gelu(128 * 197 * 768, st);
    gelu(4097, st, 1);                 // misaligned: scalar path
    gelu(1000 * 64 + 3, st, 0, true);  // dx aliases dy
  }
  for (DType st : {DType::F32, DType::BF16}) {
    resid(3, 13 * 64 + 1, st);  // odd per-sample size: scalar path
    resid(7, 197 * 192, st);
    resid(128, 197 * 768, st);
    resid(5, 197 * 64, st, true);        // y aliases x
    resid(4, 1000, st, false, true);     // no drop-path (scale null)
    resid(6, 800, st, false, false, 1);  // misaligned
  }
  auto divide = [&](int64_t n, DType st, float divisor) {
    OpCase c;
    c.family = "elementwise";
    c.name = "divide n " + std::to_string(n) + " " + dname(st) + " by " + std::to_string(divisor);
    c.elements = size_t(n);
    c.make = [=](uint64_t seed) { return std::make_unique<DivideCase>(seed, n, st, divisor); };
    v.push_back(std::move(c));
  };
  divide(5717416 + 3, DType::F32, 3.0f);  // ~kat_tiny's parameter count: many grid-stride rounds
  divide(1000 * 1000 + 3, DType::BF16, 3.0f);
  divide(7, DType::F32, 2.0f);
  return v;
}

}  // namespace kat_op_harness
