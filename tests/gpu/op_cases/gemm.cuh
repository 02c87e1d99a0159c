// OpHarness cases of the gemm family (CPU ops/cpu/gemm.cpp: linear_forward / linear_backward;
// CUDA ops/cuda/gemm.cu: cuBLASLt Gemm, column_sum_accumulate): y = x W^T + b, dx = dy W,
// dW += dy^T x, db += colsum(dy), and in bf16 also y with the bf16 bias in the cuBLASLt epilogue
// (what the model uses); float64 truth on the values the GPU sees.
// Tolerances: y, dx: fp32 1e-5 (K-term fp32 sums, ~sqrt(K) u; no TF32), bf16 8e-3 (one output
// rounding, 2^-9, dominates); dW, db 1e-5 (fp32 accumulation of exactly representable bf16 or
// fp32 products).
#pragma once

#include <random>

#include "../op_harness.cuh"
#include "ops/cpu/gemm.h"
#include "ops/cuda/gemm.h"

namespace kat_op_harness {

inline std::vector<float> randn_mt(size_t n, std::mt19937_64& g, float scale = 1.f, float offset = 0.f) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) {
    x = offset + scale * nd(g);
    if (x == 0.f) x = 1e-3f * scale;
  }
  return v;
}

class GemmCase : public OpInstance {
 public:
  GemmCase(uint64_t seed, DType st, int64_t M, int64_t K, int64_t N)
      : st_(st),
        M_(M),
        K_(K),
        N_(N),
        es_(kat::dtype_size(st)),
        x_(M * K * es_),
        W_(N * K * es_),
        b_(N * 4),
        bq_(N * 2),
        dy_(M * N * es_),
        y_(M * N * es_),
        y2_(M * N * es_),
        dx_(M * K * es_),
        dW_(N * K * 4),
        db_(N * 4),
        ws_(std::max<size_t>(kat::cuda::column_sum_workspace_bytes(M, N), 4)) {
    std::mt19937_64 g(seed);
    auto x = randn_mt(M * K, g), W = randn_mt(N * K, g, 0.1f), b = randn_mt(N, g), dy = randn_mt(M * N, g);
    dW0_ = randn_mt(N * K, g, 0.01f);
    db0_ = randn_mt(N, g, 0.01f);
    kat_gpu_test::upload_rounded(x_.p, x, st);  // rounds the host values as the GPU sees them
    kat_gpu_test::upload_rounded(W_.p, W, st);
    kat_gpu_test::upload_rounded(dy_.p, dy, st);
    upload_f32(b_.p, b);
    std::vector<float> bq = b;
    kat_gpu_test::upload_rounded(bq_.p, bq, DType::BF16);  // bq: the bias values the epilogue sees
    std::vector<double> xd = to_d(x), Wd = to_d(W), bd = to_d(b), dyd = to_d(dy), bqd = to_d(bq);
    std::vector<double> y(M * N), dx(M * K), dW = to_d(dW0_), db = to_d(db0_), y2(M * N);
    kat::ops::linear_forward<double>(M, K, N, xd.data(), Wd.data(), bd.data(), y.data());
    kat::ops::linear_backward<double>(M, K, N, xd.data(), Wd.data(), dyd.data(), dx.data(), dW.data(), db.data());
    kat::ops::linear_forward<double>(M, K, N, xd.data(), Wd.data(), bqd.data(), y2.data());
    Tolerance t_out, t_acc;
    t_out.norm = st == DType::F32 ? 1e-5 : 8e-3;
    t_out.reason = st == DType::F32 ? "fp32 K-term sums, no TF32" : "bf16: one output rounding dominates";
    t_acc.norm = 1e-5;
    t_acc.reason = "fp32 accumulation of exactly representable products";
    auto add = [&](const char* name, void* dev, DType t, std::vector<double> ref, const Tolerance& tol) {
      Output o;
      o.name = name;
      o.dev = dev;
      o.n = ref.size();
      o.dtype = t;
      o.ref = std::move(ref);
      o.tol = tol;
      outputs.push_back(std::move(o));
    };
    add("y", y_.p, st, std::move(y), t_out);
    add("dx", dx_.p, st, std::move(dx), t_out);
    add("dW", dW_.p, DType::F32, std::move(dW), t_acc);
    add("db", db_.p, DType::F32, std::move(db), t_acc);
    if (st == DType::BF16) add("y bf16 bias", y2_.p, st, std::move(y2), t_out);
    flops = 2.0 * double(M) * N * K * 3;  // forward, backward data, backward weight
    tensor_core = st == DType::BF16;
  }
  void reset() override {
    upload_f32(dW_.p, dW0_);
    upload_f32(db_.p, db0_);
  }
  void run(cudaStream_t s) override {
    gemm_.forward(M_, K_, N_, st_, x_.p, W_.p, b_.as<float>(), y_.p, s);
    gemm_.backward_data(M_, K_, N_, st_, dy_.p, W_.p, dx_.p, s);
    gemm_.backward_weight(M_, K_, N_, st_, dy_.p, x_.p, dW_.as<float>(), s);
    kat::cuda::column_sum_accumulate(M_, N_, st_, dy_.p, db_.as<float>(), ws_.p, s);
    if (st_ == DType::BF16) gemm_.forward(M_, K_, N_, st_, x_.p, W_.p, b_.as<float>(), y2_.p, s, bq_.p);
  }

 private:
  DType st_;
  int64_t M_, K_, N_;
  size_t es_;
  DevBuf x_, W_, b_, bq_, dy_, y_, y2_, dx_, dW_, db_, ws_;
  std::vector<float> dW0_, db0_;
  kat::cuda::Gemm gemm_;
};

inline std::vector<OpCase> gemm_cases() {
  std::vector<OpCase> v;
  for (DType st : {DType::F32, DType::BF16}) {
    const int64_t shapes[][3] = {{100, 72, 40},
                                 {394, 192, 576},
                                 {1576, 768, 192},
                                 {7, 33, 1000},    // odd sizes: low-alignment paths
                                 {1030, 24, 13}};  // N % 8 != 0: scalar column sums over 5 row chunks
    for (const auto& sh : shapes) {
      const int64_t M = sh[0], K = sh[1], N = sh[2];
      OpCase c;
      c.family = "gemm";
      c.name =
          "(M,K,N) = (" + std::to_string(M) + "," + std::to_string(K) + "," + std::to_string(N) + ") " + dname(st);
      c.elements = size_t(std::max({M * K, N * K, M * N}));
      c.make = [=](uint64_t seed) { return std::make_unique<GemmCase>(seed, st, M, K, N); };
      v.push_back(std::move(c));
    }
  }
  return v;
}

}  // namespace kat_op_harness
