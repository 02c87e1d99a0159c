// OpHarness cases of cuDNN's fused attention (ops/cuda/attention_cudnn.h; contract ops/attention.h),
// bf16 storage, forward + backward against the float64 truth on the values the GPU sees:
//  - the model's shapes (kat_tiny: N 197, H 3, hd 64; kat_small: H 6), B 2..4, through cuDNN both
//    ways: cuDNN refusing one of them fails the case;
//  - the two mixes, cuDNN's forward with our backward and ours with cuDNN's, which agree with the
//    truth only if both save the same lse (the model relies on it when cuDNN refuses one batch size);
//  - odd shapes (head dims 16..48, N 1, 7, 50, 65, 256), where a refusal by cuDNN is allowed: ours
//    runs instead and the case says so.
// The harness also requires 3 runs to be bitwise equal: the deterministic backward.
// Tolerances: out, dqkv norm-wise 1e-2, as our tensor-core path (attention.cuh): one rounding of each
// output (2^-9) plus the bf16 rounding of P before PV and of dS before the dQ and dK GEMMs (the
// FlashAttention scheme cuDNN uses too), each 2^-9 relative averaged over N terms.
// lse (checked here, unlike attention.cuh): norm-wise 1e-4 against log sum_j exp(S_ij) in float64.
// S comes from exact bf16 products summed in fp32 (hd <= 64 terms, ~1e-7 relative), exp/log in fp32;
// lse ~ log N + max S ~ 5, so the expected error is ~1e-6: 1e-4 leaves 100x and still catches a
// statistic of another kind (log2: 44 % off; unscaled S or no max: > 1e-2).
// Perf cases (op_bench perf "attention_cudnn"): ours and cuDNN at the training shapes of
// bench/attention_ab.sh (B 256 and 1024), without a reference (checked for NaN only).
#pragma once

#include <cmath>
#include <random>
#include <string>

#include "../op_harness.cuh"
#include "gemm.cuh"  // randn_mt
#include "ops/cpu/attention.h"
#include "ops/cuda/attention.h"
#include "ops/cuda/attention_cudnn.h"

namespace kat_op_harness {

enum class AttnImpl { Ours, Cudnn };
inline const char* attn_name(AttnImpl i) { return i == AttnImpl::Cudnn ? "cudnn" : "ours"; }

// lse (B, H, N) = log sum_j exp(q_i . k_j / sqrt(hd)) in float64, qkv (B, N, 3D).
inline std::vector<double> attention_lse(int64_t B, int64_t N, int64_t D, int64_t H,
                                         const std::vector<double>& qkv) {
  const int64_t hd = D / H;
  const double scale = 1.0 / std::sqrt(double(hd));
  std::vector<double> lse(static_cast<size_t>(B * H * N)), s(static_cast<size_t>(N));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < N; ++i) {
        const double* q = &qkv[size_t((b * N + i) * 3 * D + h * hd)];
        double mx = -INFINITY;
        for (int64_t j = 0; j < N; ++j) {
          const double* k = &qkv[size_t((b * N + j) * 3 * D + D + h * hd)];
          double d = 0;
          for (int64_t c = 0; c < hd; ++c) d += q[c] * k[c];
          s[size_t(j)] = d * scale;
          mx = std::max(mx, s[size_t(j)]);
        }
        double sum = 0;
        for (int64_t j = 0; j < N; ++j) sum += std::exp(s[size_t(j)] - mx);
        lse[size_t((b * H + h) * N + i)] = mx + std::log(sum);
      }
  return lse;
}

class AttentionCudnnCase : public OpInstance {
 public:
  // must_run: cuDNN refusing a call it is asked for fails the case (else ours runs, with a note).
  // reference = false: perf mode (no float64 truth; outputs checked for NaN and determinism only).
  AttentionCudnnCase(uint64_t seed, int64_t B, int64_t N, int64_t D, int64_t H, AttnImpl fwd, AttnImpl bwd,
                     bool must_run, bool reference)
      : B_(B),
        N_(N),
        D_(D),
        H_(H),
        fwd_(fwd),
        bwd_(bwd),
        must_run_(must_run),
        qkv_(B * N * 3 * D * 2),
        out_(B * N * D * 2),
        lse_(B * H * N * 4),
        dout_(B * N * D * 2),
        dqkv_(B * N * 3 * D * 2),
        ws_bytes_(workspace_bytes(B, N, D, H)),
        ws_(ws_bytes_) {
    const DType st = DType::BF16;
    std::mt19937_64 g(seed);
    auto qkv = randn_mt(B * N * 3 * D, g), dout = randn_mt(B * N * D, g);
    kat_gpu_test::upload_rounded(qkv_.p, qkv, st);
    kat_gpu_test::upload_rounded(dout_.p, dout, st);
    std::vector<double> out, dqkv, lse;
    if (reference) {
      std::vector<double> qd = to_d(qkv), gd = to_d(dout), probs(B * H * N * N);
      out.resize(B * N * D);
      dqkv.resize(qkv.size());
      kat::ops::attention_forward<double>(B, N, D, H, qd.data(), out.data(), probs.data());
      kat::ops::attention_backward<double>(B, N, D, H, qd.data(), probs.data(), gd.data(), dqkv.data());
      lse = attention_lse(B, N, D, H, qd);
    }
    Tolerance tol;
    tol.norm = 1e-2;
    tol.reason = "bf16 roundings of out, P, dS (FlashAttention scheme)";
    outputs.push_back({"out", out_.p, size_t(B * N * D), st, std::move(out), {}, {}, tol});
    outputs.push_back({"dqkv", dqkv_.p, size_t(B * N * 3 * D), st, std::move(dqkv), {}, {}, tol});
    Tolerance tl;
    tl.norm = 1e-4;
    tl.reason = "fp32 softmax statistics of exact bf16 products, ~1e-6 expected";
    outputs.push_back({"lse", lse_.p, size_t(B * H * N), DType::F32, std::move(lse), {}, {}, tl});
    const double hd = double(D) / H;
    flops = double(B) * H * N * N * hd * 2 * (2 + 5);  // forward: QK^T, PV; backward: QK^T, dP, dV, dQ, dK
    tensor_core = true;
  }
  // Enough for ours and, where cuDNN runs the problem, for cuDNN's graphs.
  static size_t workspace_bytes(int64_t B, int64_t N, int64_t D, int64_t H) {
    size_t ws = kat::cuda::attention_backward_workspace_bytes(B, N, H);
    if (kat::cuda::cudnn_attention_supported(B, N, D, H, DType::BF16, true))
      ws = std::max(ws, kat::cuda::cudnn_attention_workspace_bytes(B, N, D, H, DType::BF16, true));
    return std::max<size_t>(ws, 4);
  }
  void reset() override {}
  void run(cudaStream_t s) override {
    refused_.clear();
    const kat::cuda::AttentionForwardArgs fa{.B = B_,
                                             .N = N_,
                                             .D = D_,
                                             .H = H_,
                                             .dtype = DType::BF16,
                                             .qkv = qkv_.p,
                                             .out = out_.p,
                                             .lse = lse_.as<float>()};
    std::string why;
    if (fwd_ == AttnImpl::Ours || !kat::cuda::cudnn_attention_forward(fa, ws_.p, ws_bytes_, s, &why)) {
      if (fwd_ == AttnImpl::Cudnn) refused_ += "forward: " + why + "; ";
      kat::cuda::attention_forward(fa, s);
    }
    const kat::cuda::AttentionBackwardArgs ba{.B = B_,
                                              .N = N_,
                                              .D = D_,
                                              .H = H_,
                                              .dtype = DType::BF16,
                                              .qkv = qkv_.p,
                                              .out = out_.p,
                                              .lse = lse_.as<float>(),
                                              .dout = dout_.p,
                                              .dqkv = dqkv_.p,
                                              .workspace = ws_.p};
    if (bwd_ == AttnImpl::Ours || !kat::cuda::cudnn_attention_backward(ba, ws_bytes_, s, &why)) {
      if (bwd_ == AttnImpl::Cudnn) refused_ += "backward: " + why;
      kat::cuda::attention_backward(ba, s);
    }
    // Perf mode checks nothing after run(): say once that the timing is ours.
    if (!refused_.empty())
      kat::cuda::cudnn_attention_note("attention_cudnn B " + std::to_string(B_) + " N " + std::to_string(N_) +
                                      " D " + std::to_string(D_) + " H " + std::to_string(H_) +
                                      ": cuDNN refused (" + refused_ + "); ours ran");
  }
  void extra_checks(const std::vector<std::vector<float>>&, Report& r, cudaStream_t) override {
    if (refused_.empty()) return;
    if (must_run_)
      r.fail("cuDNN refused a shape it must run: " + refused_);
    else
      std::printf("      cuDNN refused (%s); ours ran\n", refused_.c_str());
  }

 private:
  int64_t B_, N_, D_, H_;
  AttnImpl fwd_, bwd_;
  bool must_run_;
  DevBuf qkv_, out_, lse_, dout_, dqkv_;
  size_t ws_bytes_;
  DevBuf ws_;
  std::string refused_;
};

inline OpCase attention_cudnn_case(int64_t B, int64_t N, int64_t D, int64_t H, AttnImpl fwd, AttnImpl bwd,
                                   bool must_run, bool reference) {
  OpCase c;
  c.family = "attention_cudnn";
  c.name = "B " + std::to_string(B) + " N " + std::to_string(N) + " D " + std::to_string(D) + " H " +
           std::to_string(H) + " bf16 forward " + attn_name(fwd) + " backward " + attn_name(bwd) +
           (reference ? "" : " perf");
  c.elements = size_t(B * N * 3 * D);
  c.make = [=](uint64_t seed) {
    return std::make_unique<AttentionCudnnCase>(seed, B, N, D, H, fwd, bwd, must_run, reference);
  };
  return c;
}

inline std::vector<OpCase> attention_cudnn_cases() {
  using I = AttnImpl;
  std::vector<OpCase> v;
  const int64_t model[][4] = {{2, 197, 192, 3}, {3, 197, 192, 3}, {4, 197, 384, 6}};  // kat_tiny, kat_small
  for (const auto& s : model)
    v.push_back(attention_cudnn_case(s[0], s[1], s[2], s[3], I::Cudnn, I::Cudnn, true, true));
  v.push_back(attention_cudnn_case(2, 197, 192, 3, I::Cudnn, I::Ours, true, true));
  v.push_back(attention_cudnn_case(2, 197, 192, 3, I::Ours, I::Cudnn, true, true));
  const int64_t odd[][4] = {
      {3, 50, 64, 4},    // kat_micro: hd 16
      {2, 65, 96, 3},    // hd 32, N just over a 64-row tile
      {2, 7, 96, 4},     // hd 24, tiny N
      {3, 1, 128, 2},    // hd 64, a single token
      {1, 256, 384, 8},  // hd 48, N at our limit
  };
  for (const auto& s : odd)
    v.push_back(attention_cudnn_case(s[0], s[1], s[2], s[3], I::Cudnn, I::Cudnn, false, true));
  return v;
}

// Timing only (op_bench perf attention_cudnn): ours and cuDNN, forward + backward, at the training
// shapes of bench/attention_ab.sh.
inline std::vector<OpCase> attention_cudnn_perf_cases() {
  std::vector<OpCase> v;
  const int64_t shapes[][4] = {{256, 197, 192, 3}, {1024, 197, 192, 3}, {256, 197, 384, 6}};
  for (const auto& s : shapes)
    for (AttnImpl i : {AttnImpl::Ours, AttnImpl::Cudnn})
      v.push_back(attention_cudnn_case(s[0], s[1], s[2], s[3], i, i, false, false));
  return v;
}

}  // namespace kat_op_harness
