// OpHarness cases of the cross_entropy family (contract ops/cross_entropy.h; CPU
// ops/cpu/cross_entropy.cpp; CUDA ops/cuda/cross_entropy.cu): softmax cross-entropy with soft
// targets and label smoothing; dlogits separate, absent (null: must stay unwritten) or over the
// logits.
#pragma once

#include "../op_harness.cuh"
#include "ops/cpu/cross_entropy.h"
#include "ops/cuda/cross_entropy.h"

namespace kat_op_harness {

enum class XentOut { Separate, Null, AliasLogits };

class XentCase : public OpInstance {
 public:
  XentCase(uint64_t seed, int64_t B, int K, DType st, XentOut mode, size_t misalign)
      : B_(B),
        K_(K),
        st_(st),
        mode_(mode),
        N_(size_t(B) * K),
        z_t_(st, N_, misalign),
        dz_t_(st, N_, misalign),
        t_((N_ + misalign) * 4),
        rl_(B * 4),
        loss_(4),
        tgt_(t_.as<float>(misalign * 4)) {
    Rng rng(seed);
    z_.resize(N_);
    std::vector<float> t(N_);
    for (int64_t r = 0; r < B; ++r) {
      const double off = 3.0 * rng.normal();
      for (int k = 0; k < K; ++k) z_[r * K + k] = rng.nz_normal(2.0, off);
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
    if (st == DType::BF16) z_ = round_vec(z_);
    std::vector<double> zd = to_d(z_), td = to_d(t), dzd(N_), rld(B);
    const double mean_d = kat::ops::softmax_xent<double>(B, K, zd.data(), td.data(), static_cast<double>(kLs),
                                                         dzd.data(), rld.data());
    std::vector<float> dzf(N_), rlf(B);
    kat::ops::softmax_xent<float>(B, K, z_.data(), t.data(), kLs, dzf.data(), rlf.data());
    upload_f32(tgt_, t);
    outputs.push_back(small_op_output("row_loss", rl_.p, DType::F32, std::move(rld), rlf));
    Output loss;
    loss.name = "loss";
    loss.dev = loss_.p;
    loss.n = 1;
    loss.ref = {mean_d};
    loss.tol.norm = 1e-5;
    loss.tol.reason = "mean of fp32 row losses summed in double vs the CPU's double: relative 1e-5";
    outputs.push_back(std::move(loss));
    if (mode == XentOut::Null) {
      Output o;  // the separate buffer the op must leave alone
      o.name = "dlogits";
      o.dev = dz_t_.ptr();
      o.n = N_;
      o.dtype = st;
      o.tol.unwritten = true;
      o.tol.reason = "dlogits is null";
      outputs.push_back(std::move(o));
    } else {
      outputs.push_back(small_op_output("dlogits", mode == XentOut::AliasLogits ? z_t_.ptr() : dz_t_.ptr(), st,
                                        std::move(dzd), dzf));
    }
    bytes = double(N_) * (kat::dtype_size(st) * (mode == XentOut::Null ? 1 : 2) + 4);  // logits, dlogits, target
  }
  void reset() override { z_t_.upload(z_); }  // dlogits may overwrite the logits
  void run(cudaStream_t s) override {
    void* dz = mode_ == XentOut::Null ? nullptr : (mode_ == XentOut::AliasLogits ? z_t_.ptr() : dz_t_.ptr());
    kat::cuda::softmax_xent({.B = B_,
                             .K = K_,
                             .dtype = st_,
                             .logits = z_t_.ptr(),
                             .target = tgt_,
                             .label_smoothing = kLs,
                             .dlogits = dz,
                             .row_loss = rl_.as<float>(),
                             .loss = loss_.as<float>()},
                            s);
  }

 private:
  static constexpr float kLs = 0.1f;
  int64_t B_;
  int K_;
  DType st_;
  XentOut mode_;
  size_t N_;
  DevTensor z_t_, dz_t_;
  DevBuf t_, rl_, loss_;
  float* tgt_;
  std::vector<float> z_;
};

inline std::vector<OpCase> cross_entropy_cases() {
  std::vector<OpCase> v;
  auto add = [&](int64_t B, int K, DType st, XentOut mode = XentOut::Separate, size_t misalign = 0) {
    OpCase c;
    c.family = "cross_entropy";
    c.name = "softmax_xent B " + std::to_string(B) + " K " + std::to_string(K) + " " + dname(st) +
             (mode == XentOut::Null          ? " dlogits=null"
              : mode == XentOut::AliasLogits ? " dlogits=logits"
                                             : "") +
             (misalign ? " misaligned" : "");
    c.elements = size_t(B) * K;
    c.make = [=](uint64_t seed) { return std::make_unique<XentCase>(seed, B, K, st, mode, misalign); };
    v.push_back(std::move(c));
  };
  for (DType st : {DType::F32, DType::BF16}) {
    add(3, 1000, st);
    add(128, 1000, st);
    add(1000, 192, st);
    add(7, 64, st);
    add(9, 1001, st);   // odd K: scalar path
    add(5, 20001, st);  // wider than registers: loop kernel
    add(128 * 197, 768, st);
  }
  for (DType st : {DType::F32, DType::BF16}) {
    add(64, 1000, st, XentOut::Null);
    add(64, 1000, st, XentOut::AliasLogits);
    add(33, 1000, st, XentOut::Separate, 1);  // misaligned
  }
  return v;
}

}  // namespace kat_op_harness
