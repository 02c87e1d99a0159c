// OpHarness cases of the attention family (contract ops/attention.h; CPU ops/cpu/attention.cpp;
// CUDA ops/cuda/attention.cu, attention_mma.cu): forward + backward on three paths (fp32; bf16 on
// CUDA cores; bf16 on tensor cores where the head dim has one), float64 truth on the values the
// GPU sees.
// Tolerances: fp32 1e-5 (N-term fp32 sums and expf, <= 2 ulp); bf16 1e-2 (one rounding of the
// output, 2^-9, plus the bf16 rounding of `out` used in Dv_i, and on the tensor-core path the bf16
// rounding of P, P^T and dS before their second GEMM, each 2^-9 relative averaged over N terms).
// The saved lse is checked for NaN and determinism only.
#pragma once

#include <random>

#include "../op_harness.cuh"
#include "gemm.cuh"  // randn_mt
#include "ops/cpu/attention.h"
#include "ops/cuda/attention.h"

namespace kat_op_harness {

class AttentionCase : public OpInstance {
 public:
  AttentionCase(uint64_t seed, DType st, int64_t B, int64_t N, int64_t D, int64_t H, bool simt)
      : st_(st),
        B_(B),
        N_(N),
        D_(D),
        H_(H),
        simt_(simt),
        es_(kat::dtype_size(st)),
        qkv_(B * N * 3 * D * es_),
        out_(B * N * D * es_),
        lse_(B * H * N * 4),
        dout_(B * N * D * es_),
        dqkv_(B * N * 3 * D * es_),
        ws_(std::max<size_t>(kat::cuda::attention_backward_workspace_bytes(B, N, H), 4)) {
    std::mt19937_64 g(seed);
    auto qkv = randn_mt(B * N * 3 * D, g), dout = randn_mt(B * N * D, g);
    kat_gpu_test::upload_rounded(qkv_.p, qkv, st);
    kat_gpu_test::upload_rounded(dout_.p, dout, st);
    std::vector<double> qd = to_d(qkv), gd = to_d(dout), out(B * N * D), probs(B * H * N * N), dqkv(qkv.size());
    kat::ops::attention_forward<double>(B, N, D, H, qd.data(), out.data(), probs.data());
    kat::ops::attention_backward<double>(B, N, D, H, qd.data(), probs.data(), gd.data(), dqkv.data());
    Tolerance tol;
    tol.norm = st == DType::F32 ? 1e-5 : 1e-2;
    tol.reason = st == DType::F32 ? "fp32 N-term sums and expf" : "bf16 roundings of out, P, P^T, dS";
    Output o;
    o.name = "out";
    o.dev = out_.p;
    o.n = out.size();
    o.dtype = st;
    o.ref = std::move(out);
    o.tol = tol;
    outputs.push_back(o);
    o.name = "dqkv";
    o.dev = dqkv_.p;
    o.n = dqkv.size();
    o.ref = std::move(dqkv);
    outputs.push_back(o);
    Output l;
    l.name = "lse";
    l.dev = lse_.p;
    l.n = size_t(B * H * N);
    outputs.push_back(l);
    const double hd = double(D) / H;
    flops = double(B) * H * N * N * hd * 2 * (2 + 5);  // forward: QK^T, PV; backward: QK^T, dP, dV, dQ, dK
    tensor_core = st == DType::BF16 && !simt;
  }
  void reset() override {}
  void run(cudaStream_t s) override {
    kat::cuda::attention_force_simt(simt_);
    kat::cuda::attention_forward(
        {.B = B_, .N = N_, .D = D_, .H = H_, .dtype = st_, .qkv = qkv_.p, .out = out_.p, .lse = lse_.as<float>()},
        s);
    kat::cuda::attention_backward({.B = B_,
                                   .N = N_,
                                   .D = D_,
                                   .H = H_,
                                   .dtype = st_,
                                   .qkv = qkv_.p,
                                   .out = out_.p,
                                   .lse = lse_.as<float>(),
                                   .dout = dout_.p,
                                   .dqkv = dqkv_.p,
                                   .workspace = ws_.p},
                                  s);
    kat::cuda::attention_force_simt(false);
  }

 private:
  DType st_;
  int64_t B_, N_, D_, H_;
  bool simt_;
  size_t es_;
  DevBuf qkv_, out_, lse_, dout_, dqkv_, ws_;
};

inline std::vector<OpCase> attention_cases() {
  std::vector<OpCase> v;
  const int64_t shapes[][4] = {
      {2, 197, 192, 3},  // kat_tiny: hd 64
      {3, 50, 64, 4},    // kat_micro: hd 16
      {2, 65, 96, 3},    // hd 32, N just over one tile
      {1, 256, 384, 8},  // hd 48, N at the limit
      {2, 7, 96, 4},     // hd 24 (SIMT only), tiny N
      {3, 1, 128, 2},    // hd 64, a single token
      {2, 128, 256, 4},  // hd 64, N a whole number of 64-row tiles
  };
  for (int path = 0; path < 3; ++path) {  // fp32; bf16 SIMT; bf16 tensor-core
    const DType st = path == 0 ? DType::F32 : DType::BF16;
    const bool simt = path == 1;
    for (const auto& sh : shapes) {
      const int64_t B = sh[0], N = sh[1], D = sh[2], H = sh[3];
      OpCase c;
      c.family = "attention";
      c.name = "B " + std::to_string(B) + " N " + std::to_string(N) + " D " + std::to_string(D) + " H " +
               std::to_string(H) + " " +
               (path == 0 ? "f32"
                : simt    ? "bf16 simt"
                          : "bf16 tensor-core");
      c.elements = size_t(B * N * 3 * D);
      c.make = [=](uint64_t seed) { return std::make_unique<AttentionCase>(seed, st, B, N, D, H, simt); };
      v.push_back(std::move(c));
    }
  }
  return v;
}

}  // namespace kat_op_harness
