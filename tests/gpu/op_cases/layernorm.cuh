// OpHarness cases of the layernorm family (contract ops/layernorm.h; CPU ops/cpu/layernorm.cpp;
// CUDA ops/cuda/layernorm.cu): forward + backward on one case, every output checked.
#pragma once

#include "../op_harness.cuh"
#include "ops/cpu/layernorm.h"
#include "ops/cuda/layernorm.h"

namespace kat_op_harness {

constexpr float kLnEps = 1e-6f;  // the model's LayerNorm eps

class LayerNormCase : public OpInstance {
 public:
  LayerNormCase(uint64_t seed, int64_t rows, int C, DType st, size_t misalign)
      : rows_(rows),
        C_(C),
        st_(st),
        N_(size_t(rows) * C),
        x_t_(st, N_, misalign),
        dy_t_(st, N_, misalign),
        dx_t_(st, N_, misalign),
        y_t_(st, N_, misalign),
        gam_(C * 4),
        bet_(C * 4),
        mean_(rows * 4),
        rstd_(rows * 4),
        dg_(C * 4),
        db_(C * 4),
        ws_(std::max<size_t>(kat::cuda::layernorm_backward_workspace_bytes(rows, C), 4)) {
    Rng rng(seed);
    const bool bf = st == DType::BF16;
    std::vector<float> x(N_), dy(N_), g(C), b(C);
    dx0_.resize(N_);
    dg0_.resize(C);
    db0_.resize(C);
    for (int64_t r = 0; r < rows; ++r) {
      const double off = rng.normal(), sc = 0.5 + rng.uniform() * 2.0;  // per-row shift and scale
      for (int c = 0; c < C; ++c) x[r * C + c] = rng.nz_normal(sc, off);
    }
    for (auto& v : dy) v = rng.nz_normal(1.0);
    for (auto& v : dx0_) v = rng.nz_normal(1.0);
    for (auto& v : g) v = rng.nz_normal(0.2, 1.0);
    for (auto& v : b) v = rng.nz_normal(0.2);
    // Initial parameter gradients of the size of the sums (so overwrite-instead-of-add fails).
    const double gsc = std::sqrt(static_cast<double>(rows));
    for (auto& v : dg0_) v = rng.nz_normal(gsc);
    for (auto& v : db0_) v = rng.nz_normal(gsc);
    if (bf) {
      x = round_vec(x);
      dy = round_vec(dy);
      dx0_ = round_vec(dx0_);
    }
    // Truth (float64) and baseline (fp32) on the same values.
    std::vector<double> xd = to_d(x), gd = to_d(g), bd = to_d(b), dyd = to_d(dy);
    std::vector<double> yd(N_), md(rows), rd(rows), dxd = to_d(dx0_), dgd = to_d(dg0_), dbd = to_d(db0_);
    kat::ops::layernorm_forward<double>(rows, C, static_cast<double>(kLnEps), xd.data(), gd.data(), bd.data(),
                                        yd.data(), md.data(), rd.data());
    kat::ops::layernorm_backward<double>(rows, C, xd.data(), gd.data(), md.data(), rd.data(), dyd.data(),
                                         dxd.data(), dgd.data(), dbd.data());
    std::vector<float> yf(N_), mf(rows), rf(rows), dxf = dx0_, dgf = dg0_, dbf = db0_;
    kat::ops::layernorm_forward<float>(rows, C, kLnEps, x.data(), g.data(), b.data(), yf.data(), mf.data(),
                                       rf.data());
    kat::ops::layernorm_backward<float>(rows, C, x.data(), g.data(), mf.data(), rf.data(), dy.data(), dxf.data(),
                                        dgf.data(), dbf.data());
    x_t_.upload(x);
    dy_t_.upload(dy);
    upload_f32(gam_.p, g);
    upload_f32(bet_.p, b);
    outputs.push_back(small_op_output("y", y_t_.ptr(), st, std::move(yd), yf));
    outputs.push_back(small_op_output("mean", mean_.p, DType::F32, std::move(md), mf));
    outputs.push_back(small_op_output("rstd", rstd_.p, DType::F32, std::move(rd), rf));
    outputs.push_back(small_op_output("dx_acc", dx_t_.ptr(), st, std::move(dxd), dxf));
    outputs.push_back(small_op_output("dgamma", dg_.p, DType::F32, std::move(dgd), dgf));
    outputs.push_back(small_op_output("dbeta", db_.p, DType::F32, std::move(dbd), dbf));
    const double es = double(kat::dtype_size(st));
    bytes = N_ * es * 2 + N_ * es * 4;  // fwd: x, y; bwd: x, dy, dx_acc (read + write)
  }
  void reset() override {
    KAT_CUDA_CHECK(cudaMemset(ws_.p, 0xff, ws_.bytes));  // stale partials must not matter
    dx_t_.upload(dx0_);
    upload_f32(dg_.p, dg0_);
    upload_f32(db_.p, db0_);
  }
  void run(cudaStream_t s) override {
    kat::cuda::layernorm_forward({.rows = rows_,
                                  .C = C_,
                                  .eps = kLnEps,
                                  .dtype = st_,
                                  .x = x_t_.ptr(),
                                  .gamma = gam_.as<float>(),
                                  .beta = bet_.as<float>(),
                                  .y = y_t_.ptr(),
                                  .mean = mean_.as<float>(),
                                  .rstd = rstd_.as<float>()},
                                 s);
    kat::cuda::layernorm_backward({.rows = rows_,
                                   .C = C_,
                                   .dtype = st_,
                                   .x = x_t_.ptr(),
                                   .gamma = gam_.as<float>(),
                                   .mean = mean_.as<float>(),
                                   .rstd = rstd_.as<float>(),
                                   .dy = dy_t_.ptr(),
                                   .dx_acc = dx_t_.ptr(),
                                   .dgamma = dg_.as<float>(),
                                   .dbeta = db_.as<float>(),
                                   .workspace = ws_.p},
                                  s);
  }

 private:
  int64_t rows_;
  int C_;
  DType st_;
  size_t N_;
  DevTensor x_t_, dy_t_, dx_t_, y_t_;
  DevBuf gam_, bet_, mean_, rstd_, dg_, db_, ws_;
  std::vector<float> dx0_, dg0_, db0_;
};

inline void add_layernorm_case(std::vector<OpCase>& cases, int64_t rows, int C, DType st, size_t misalign = 0) {
  OpCase c;
  c.family = "layernorm";
  c.name = "rows " + std::to_string(rows) + " C " + std::to_string(C) + " " + dname(st) +
           (misalign ? " misaligned" : "");
  c.elements = size_t(rows) * C;
  c.make = [=](uint64_t seed) { return std::make_unique<LayerNormCase>(seed, rows, C, st, misalign); };
  cases.push_back(std::move(c));
}

inline std::vector<OpCase> layernorm_cases() {
  std::vector<OpCase> v;
  for (DType st : {DType::F32, DType::BF16}) {
    add_layernorm_case(v, 3, 64, st);
    add_layernorm_case(v, 1000, 192, st);
    add_layernorm_case(v, 129, 1000, st);
    add_layernorm_case(v, 33, 771, st);  // C not a multiple of the vector: scalar path
    add_layernorm_case(v, 5, 1, st);     // C = 1: y = beta, dx = 0
  }
  for (DType st : {DType::BF16, DType::F32}) add_layernorm_case(v, 128 * 197, 768, st);  // model shape
  for (DType st : {DType::BF16, DType::F32}) {
    add_layernorm_case(v, 77, 4096, st);
    add_layernorm_case(v, 3, 4095, st);  // widest scalar row
    add_layernorm_case(v, 301, 2048, st);
  }
  for (DType st : {DType::F32, DType::BF16}) add_layernorm_case(v, 100, 768, st, 1);  // misaligned
  return v;
}

}  // namespace kat_op_harness
