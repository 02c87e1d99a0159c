// OpHarness cases of the optim family (contract and shared scalars ops/optim.h; CPU
// ops/cpu/optim.cpp; CUDA ops/cuda/optim.cu): one AdamW step (with its optional bf16 weight
// copy) followed by an EMA update, against the CPU ops; global-norm clipping (ClipGradNormCase,
// tolerances there).
// Tolerance of AdamW + EMA: params, m, v, ema vs the CPU fp32 op itself, err <= 1e-6. Same formula, same
// operation order, fp32 both sides, no FMA on the GPU side; differences can only come from FMA
// contraction the host compiler applies (GCC contracts under -march=x86-64-v3), <= 1 ulp per
// affected operation, i.e. ~1e-7. The fraction of bitwise-identical elements is printed (1.0 when
// the CPU build does not contract). The bf16 copy must equal the rounded fp32 result bitwise.
#pragma once

#include "../op_harness.cuh"
#include "ops/cpu/optim.h"
#include "ops/cuda/optim.h"

namespace kat_op_harness {

class AdamWEmaCase : public OpInstance {
 public:
  AdamWEmaCase(uint64_t seed, int64_t n, bool with_bf16, bool no_decay, size_t misalign)
      : n_(n),
        with_bf16_(with_bf16),
        no_decay_(no_decay),
        p_(n * 4 + 16),
        g_(n * 4 + 16),
        m_(n * 4 + 16),
        v_(n * 4 + 16),
        mask_(n + 16),
        bf_(n * 2 + 16),
        ema_(n * 4 + 16) {
    Rng rng(seed);
    const size_t pad = misalign * 4;
    pp_ = p_.as<float>(pad);
    gp_ = g_.as<float>(pad);
    mp_ = m_.as<float>(pad);
    vp_ = v_.as<float>(pad);
    ep_ = ema_.as<float>(pad);
    kp_ = mask_.as<uint8_t>(misalign);
    bp_ = bf_.as<char>(misalign * 2);
    // Decay mask in chunks, as a parameter table lays it out (weights and rational coefficients
    // decay, biases / norms / embeddings do not); all zeros for the null-mask case (the GPU gets
    // nullptr, which must mean the same).
    std::vector<uint8_t> mask(n, 0);
    const int64_t chunk = std::max<int64_t>(1, n / 7);
    for (int64_t off = 0, i = 0; off < n; ++i) {
      const int64_t len = std::min(chunk + (i % 3), n - off);
      if (!no_decay && (i % 5 == 0 || i % 5 == 3)) std::fill_n(mask.begin() + off, len, uint8_t(1));
      off += len;
    }
    const double lr = 1e-3 * (0.5 + rng.uniform()), beta1 = 0.9, beta2 = 0.999, eps = 1e-8, wd = 0.05;
    p0_.resize(n);
    m0_.resize(n);
    v0_.resize(n);
    ema0_.resize(n);
    std::vector<float> g(n);
    for (auto& x : p0_) x = rng.nz_normal(0.05);
    for (auto& x : g) x = rng.nz_normal(1e-2);
    for (auto& x : m0_) x = rng.nz_normal(1e-3);
    for (auto& x : v0_) x = static_cast<float>(std::abs(rng.nz_normal(1e-4)) + 1e-9);
    for (auto& x : ema0_) x = rng.nz_normal(0.05);
    const int64_t t = 2 + static_cast<int64_t>(rng.next() % 50);  // step number after increment
    sc_ = kat::ops::adamw_scalars(lr, beta1, beta2, eps, wd, t);
    std::vector<float> pc = p0_, mc = m0_, vc = v0_, ec = ema0_;
    kat::ops::adamw_step(n, sc_, pc.data(), g.data(), mc.data(), vc.data(), mask.data());
    kat::ops::ema_update(n, ec.data(), pc.data(), kDecay);
    KAT_CUDA_CHECK(cudaMemcpy(kp_, mask.data(), n, cudaMemcpyHostToDevice));
    upload_f32(gp_, g);
    Tolerance tol;
    tol.norm = 1e-6;
    tol.reason = "same fp32 formula and order as the CPU op; only host FMA contraction differs (~1e-7)";
    const std::pair<const char*, float*> outs[] = {{"params", pp_}, {"m", mp_}, {"v", vp_}, {"ema", ep_}};
    const std::vector<float>* refs[] = {&pc, &mc, &vc, &ec};
    for (int i = 0; i < 4; ++i) {
      Output o;
      o.name = outs[i].first;
      o.dev = outs[i].second;
      o.n = size_t(n);
      o.ref = to_d(*refs[i]);
      o.tol = tol;
      outputs.push_back(std::move(o));
    }
    if (with_bf16) {
      Output o;  // checked against round(params) in extra_checks
      o.name = "bf16 copy";
      o.dev = bp_;
      o.n = size_t(n);
      o.dtype = DType::BF16;
      outputs.push_back(std::move(o));
    }
    bytes = double(n) * (4 * 7 + (no_decay ? 0 : 1) + (with_bf16 ? 2 : 0) + 4 * 3);  // adamw + ema
  }
  void reset() override {
    upload_f32(pp_, p0_);
    upload_f32(mp_, m0_);
    upload_f32(vp_, v0_);
    upload_f32(ep_, ema0_);
  }
  void run(cudaStream_t s) override {
    kat::cuda::adamw_step({.n = n_,
                           .scalars = sc_,
                           .params = pp_,
                           .grads = gp_,
                           .m = mp_,
                           .v = vp_,
                           .decay_mask = no_decay_ ? nullptr : kp_,
                           .params_bf16 = with_bf16_ ? bp_ : nullptr},
                          s);
    kat::cuda::ema_update(n_, ep_, pp_, kDecay, s);
  }
  void extra_checks(const std::vector<std::vector<float>>& outs, Report& r, cudaStream_t) override {
    if (with_bf16_) r.check(same_bits(outs[4], round_vec(outs[0])), "bf16 copy != round(params)");
  }

 private:
  static constexpr double kDecay = 0.9998;
  int64_t n_;
  bool with_bf16_, no_decay_;
  DevBuf p_, g_, m_, v_, mask_, bf_, ema_;
  float *pp_ = nullptr, *gp_ = nullptr, *mp_ = nullptr, *vp_ = nullptr, *ep_ = nullptr;
  uint8_t* kp_ = nullptr;
  void* bp_ = nullptr;
  kat::ops::AdamWScalars sc_;
  std::vector<float> p0_, m0_, v0_, ema0_;
};

// Global-norm clipping (torch clip_grad_norm_) in place on n fp32 gradients, against the CPU op.
// clipped: max_norm = a quarter of the norm (every element scaled); unclipped: max_norm = 1e9 (the
// norm is below it: the gradients must come back bitwise unchanged).
// Tolerances: the norm (a double left in the workspace) vs the CPU's sequential double sum,
// relative <= 1e-12: two summation orders of n double squares differ by ~sqrt(n) * 1.1e-16
// (< 3e-13 for n <= 6 M); a lost element or block shows as >= 1e-7. The clipped gradients,
// norm-wise <= 1e-6: the fp32 factor float(max_norm / (norm + 1e-6)) comes from norms that agree to
// ~1e-15, so it may differ from the CPU's by one ulp (6e-8 relative); each product is one
// rounding on both sides.
// The workspace (norm included) is poisoned with NaN before every run; the norm must be bitwise
// the same when the op runs again on the same inputs.
// Perf mode: after the first timed run the gradients are within max_norm, so the timed runs are
// the norm pass alone (bytes = 4 n).
class ClipGradNormCase : public OpInstance {
 public:
  ClipGradNormCase(uint64_t seed, int64_t n, bool clip)
      : n_(n), g_(size_t(n) * 4), ws_(kat::cuda::clip_grad_norm_workspace_bytes()) {
    Rng rng(seed);
    g0_.resize(size_t(n));
    for (auto& x : g0_) x = rng.nz_normal(1.0);
    double ss = 0;
    for (float x : g0_) ss += double(x) * x;
    max_norm_ = clip ? 0.25 * std::sqrt(ss) : 1e9;
    std::vector<float> ref = g0_;
    norm_cpu_ = kat::ops::clip_grad_norm(n, ref.data(), max_norm_);
    Output o;
    o.name = "grads";
    o.dev = g_.p;
    o.n = size_t(n);
    o.ref = to_d(ref);
    if (clip) {
      o.tol.norm = 1e-6;
      o.tol.reason = "fp32 clip factor from norms equal to ~1e-15: at most 1 ulp apart (6e-8)";
    } else {
      o.tol.bitwise = true;
      o.tol.reason = "norm below max_norm: the gradients are left as they are";
    }
    outputs.push_back(std::move(o));
    bytes = double(n) * 4;
  }
  void reset() override {
    upload_f32(g_.p, g0_);
    KAT_CUDA_CHECK(cudaMemset(ws_.p, 0xff, ws_.bytes));  // partials and norm: NaN doubles
  }
  void run(cudaStream_t s) override { kat::cuda::clip_grad_norm(n_, g_.as<float>(), max_norm_, ws_.p, s); }
  void extra_checks(const std::vector<std::vector<float>>&, Report& r, cudaStream_t s) override {
    const double first = norm_gpu();
    const double rel = std::fabs(first - norm_cpu_) / norm_cpu_;
    std::printf("      %-10s rel %.3e vs the CPU's sequential sum (norm %.6g, max_norm %.6g)\n", "norm", rel,
                norm_cpu_, max_norm_);
    r.check(std::isfinite(first) && rel <= 1e-12,
            "norm " + std::to_string(first) + " vs CPU " + std::to_string(norm_cpu_) +
                ": relative error above 1e-12 (two double summation orders)");
    reset();  // the same inputs again: the norm must have the same bits
    KAT_CUDA_CHECK(cudaDeviceSynchronize());
    run(s);
    KAT_CUDA_CHECK(cudaStreamSynchronize(s));
    const double second = norm_gpu();
    r.check(std::memcmp(&first, &second, sizeof first) == 0, "norm not bitwise reproducible");
  }

 private:
  double norm_gpu() const {
    double v = 0;
    KAT_CUDA_CHECK(cudaMemcpy(&v, kat::cuda::clip_grad_norm_result(ws_.p), sizeof v, cudaMemcpyDeviceToHost));
    return v;
  }
  int64_t n_;
  DevBuf g_, ws_;
  std::vector<float> g0_;
  double max_norm_ = 0, norm_cpu_ = 0;
};

inline std::vector<OpCase> optim_cases() {
  std::vector<OpCase> v;
  auto add = [&](int64_t n, bool with_bf16, bool no_decay = false, size_t misalign = 0) {
    OpCase c;
    c.family = "optim";
    c.name = "adamw+ema n " + std::to_string(n) + (with_bf16 ? " +bf16 copy" : "") +
             (no_decay ? " mask=null" : "") + (misalign ? " misaligned" : "");
    c.elements = size_t(n);
    c.make = [=](uint64_t seed) { return std::make_unique<AdamWEmaCase>(seed, n, with_bf16, no_decay, misalign); };
    v.push_back(std::move(c));
  };
  add(3, true);
  add(1000003, true);
  add(5717411, false);         // ~ kat_tiny's parameter count
  add(4099, true, true);       // no decay mask
  add(10001, true, false, 1);  // misaligned: scalar path
  auto clip = [&](int64_t n, bool clipped) {
    OpCase c;
    c.family = "optim";
    c.name = "clip_grad_norm n " + std::to_string(n) + (clipped ? " clipped" : " unclipped");
    c.elements = size_t(n);
    c.make = [=](uint64_t seed) { return std::make_unique<ClipGradNormCase>(seed, n, clipped); };
    v.push_back(std::move(c));
  };
  for (bool clipped : {true, false}) {
    clip(3, clipped);
    clip(1000003, clipped);
    clip(5717416 + 3, clipped);  // ~kat_tiny's parameter count, not a multiple of anything: many blocks
  }
  return v;
}

}  // namespace kat_op_harness
