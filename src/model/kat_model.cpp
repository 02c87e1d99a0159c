#include "model/kat_model.h"
#include "model/mimetic_init.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "ops/cpu_ops.h"
#include "ops/grkan.h"

namespace kat {

using namespace ops;

namespace {
constexpr float kLnEps = 1e-6f;

// α = Var[x] / E[F(x)^2] for x ~ N(0,1) (SPEC.md §3): the variance-preserving gain of an activation.
double activation_gain(const std::string& act) {
  if (act == "swish") return 2.8178;
  if (act == "gelu") return 2.3568;
  return 1.0;  // identity
}
}  // namespace

KatModel::KatModel(const ModelConfig& cfg) : cfg_(cfg) {
  cfg_.validate();
  const int64_t D = cfg.embed_dim, Hd = cfg.mlp_hidden, C = cfg.in_chans, p = cfg.patch_size;
  const int64_t G = cfg.groups, An = cfg.shared_numerator ? 1 : G;
  // Order = timm state_dict order.
  off_cls_ = table_.add("cls_token", {1, 1, D}, ParamKind::Embed);
  off_pos_ = table_.add("pos_embed", {1, cfg.tokens(), D}, ParamKind::Embed);
  off_pew_ = table_.add("patch_embed.proj.weight", {D, C, p, p}, ParamKind::Weight);
  off_peb_ = table_.add("patch_embed.proj.bias", {D}, ParamKind::Bias);
  for (int i = 0; i < cfg.depth; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    BlockOffsets o;
    o.n1w = table_.add(b + "norm1.weight", {D}, ParamKind::Norm);
    o.n1b = table_.add(b + "norm1.bias", {D}, ParamKind::Norm);
    o.qkvw = table_.add(b + "attn.qkv.weight", {3 * D, D}, ParamKind::Weight);
    o.qkvb = table_.add(b + "attn.qkv.bias", {3 * D}, ParamKind::Bias);
    o.projw = table_.add(b + "attn.proj.weight", {D, D}, ParamKind::Weight);
    o.projb = table_.add(b + "attn.proj.bias", {D}, ParamKind::Bias);
    o.n2w = table_.add(b + "norm2.weight", {D}, ParamKind::Norm);
    o.n2b = table_.add(b + "norm2.bias", {D}, ParamKind::Norm);
    if (cfg.is_kat()) {
      o.a1n = table_.add(b + "mlp.act1.weight_numerator", {An, 6}, ParamKind::Rational);
      o.a1d = table_.add(b + "mlp.act1.weight_denominator", {G, 4}, ParamKind::Rational);
    }
    o.fc1w = table_.add(b + "mlp.fc1.weight", {Hd, D}, ParamKind::Weight);
    o.fc1b = table_.add(b + "mlp.fc1.bias", {Hd}, ParamKind::Bias);
    if (cfg.is_kat()) {
      o.a2n = table_.add(b + "mlp.act2.weight_numerator", {An, 6}, ParamKind::Rational);
      o.a2d = table_.add(b + "mlp.act2.weight_denominator", {G, 4}, ParamKind::Rational);
    }
    o.fc2w = table_.add(b + "mlp.fc2.weight", {D, Hd}, ParamKind::Weight);
    o.fc2b = table_.add(b + "mlp.fc2.bias", {D}, ParamKind::Bias);
    blk_.push_back(o);
  }
  off_nw_ = table_.add("norm.weight", {D}, ParamKind::Norm);
  off_nb_ = table_.add("norm.bias", {D}, ParamKind::Norm);
  off_hw_ = table_.add("head.weight", {cfg.num_classes, D}, ParamKind::Weight);
  off_hb_ = table_.add("head.bias", {cfg.num_classes}, ParamKind::Bias);
  params.assign(table_.total(), 0.0f);
  grads.assign(table_.total(), 0.0f);
}

void KatModel::init_params(uint64_t seed) {
  Rng rng(seed);
  std::fill(params.begin(), params.end(), 0.0f);
  const int64_t D = cfg_.embed_dim, Hd = cfg_.mlp_hidden;
  const bool timm = cfg_.init == "timm";
  auto fill = [&](int64_t off, int64_t n, auto gen) {
    for (int64_t i = 0; i < n; ++i) params[off + i] = static_cast<float>(gen());
  };
  auto trunc02 = [&] { return rng.trunc_normal(0.02); };
  fill(off_cls_, D, [&] { return rng.normal() * 1e-6; });
  fill(off_pos_, cfg_.tokens() * D, trunc02);
  {  // PyTorch's Conv2d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    const int64_t fan_in = int64_t(cfg_.in_chans) * cfg_.patch_size * cfg_.patch_size;
    const double bound = 1.0 / std::sqrt(double(fan_in));
    fill(off_pew_, D * fan_in, [&] { return rng.uniform(-bound, bound); });
    fill(off_peb_, D, [&] { return rng.uniform(-bound, bound); });
  }
  std::vector<double> a1, b1, a2, b2;
  if (cfg_.is_kat()) {
    grkan_init_coefficients(cfg_.act1_init, a1, b1);
    grkan_init_coefficients(cfg_.act2_init, a2, b2);
  }
  const int64_t An = cfg_.shared_numerator ? 1 : cfg_.groups;
  for (const auto& o : blk_) {
    std::fill_n(params.data() + o.n1w, D, 1.0f);
    std::fill_n(params.data() + o.n2w, D, 1.0f);
    fill(o.qkvw, 3 * D * D, trunc02);
    fill(o.projw, D * D, trunc02);
    if (cfg_.is_kat()) {
      for (int64_t r = 0; r < An; ++r)
        for (int k = 0; k < 6; ++k) {
          params[o.a1n + r * 6 + k] = float(a1[k]);
          params[o.a2n + r * 6 + k] = float(a2[k]);
        }
      for (int64_t g = 0; g < cfg_.groups; ++g)
        for (int k = 0; k < 4; ++k) {
          params[o.a1d + g * 4 + k] = float(b1[k]);
          params[o.a2d + g * 4 + k] = float(b2[k]);
        }
    }
    if (timm) {
      fill(o.fc1w, Hd * D, trunc02);
      fill(o.fc2w, D * Hd, trunc02);
      mimetic_attention_init(int(D), cfg_.num_heads, params.data() + o.qkvw, params.data() + o.projw, rng);
    } else {
      // Variance preserving: W ~ N(0, α / d_in), α the gain of the activation feeding the linear.
      const std::string in1 = cfg_.is_kat() ? cfg_.act1_init : "identity";
      const std::string in2 = cfg_.is_kat() ? cfg_.act2_init : "gelu";
      const double s1 = std::sqrt(activation_gain(in1) / D), s2 = std::sqrt(activation_gain(in2) / Hd);
      fill(o.fc1w, Hd * D, [&] { return rng.normal() * s1; });
      fill(o.fc2w, D * Hd, [&] { return rng.normal() * s2; });
    }
  }
  std::fill_n(params.data() + off_nw_, D, 1.0f);
  fill(off_hw_, int64_t(cfg_.num_classes) * D, trunc02);
}

void KatModel::plan(int max_batch) {
  KAT_CHECK(max_batch > 0, "batch size must be > 0, got ", max_batch);
  if (max_batch == max_batch_) return;
  max_batch_ = max_batch;
  const int64_t B = max_batch, N = cfg_.tokens(), D = cfg_.embed_dim, Hd = cfg_.mlp_hidden;
  const int64_t NH = cfg_.num_heads, P = cfg_.num_patches();
  const int64_t K = int64_t(cfg_.in_chans) * cfg_.patch_size * cfg_.patch_size;
  const int64_t BND = B * N * D, BNH = B * N * Hd;
  // Pass 1 counts, pass 2 carves: one arena, 64-byte aligned sub-buffers.
  int64_t cursor = 0;
  float* base = nullptr;
  auto take = [&](int64_t n) {
    float* p = base ? base + cursor : nullptr;
    cursor += (n + 15) / 16 * 16;
    return p;
  };
  for (int pass = 0; pass < 2; ++pass) {
    cursor = 0;
    acts_.assign(cfg_.depth, BlockActs{});
    for (auto& a : acts_) {
      a.x_in = take(BND);
      a.ln1 = take(BND);
      a.mean1 = take(B * N);
      a.rstd1 = take(B * N);
      a.qkv = take(3 * BND);
      a.probs = take(B * NH * N * N);
      a.att = take(BND);
      a.x_mid = take(BND);
      a.ln2 = take(BND);
      a.mean2 = take(B * N);
      a.rstd2 = take(B * N);
      a.r1 = cfg_.is_kat() ? take(BND) : nullptr;
      a.h = take(BNH);
      a.r2 = take(BNH);
      a.dp_attn = take(B);
      a.dp_ffn = take(B);
    }
    cols_ = take(B * P * K);
    x_final_ = take(BND);
    feat_ = take(BND);
    fmean_ = take(B * N);
    frstd_ = take(B * N);
    cls_ = take(B * D);
    logits_ = take(B * cfg_.num_classes);
    tmp_ = take(std::max(BND, B * P * D));
    d_x_ = take(BND);
    d_tmp_ = take(BND);
    d_ln_ = take(BND);
    d_qkv_ = take(3 * BND);
    d_att_ = take(BND);
    d_h_ = take(BNH);
    d_r_ = take(BNH);
    d_cls_ = take(B * D);
    if (pass == 0) {
      arena_.assign(cursor, 0.0f);
      base = arena_.data();
    }
  }
}

const float* KatModel::features() const { return feat_; }

const float* KatModel::forward(const float* images, int Bi, bool train, Rng* rng) {
  KAT_CHECK(max_batch_ > 0, "KatModel::forward: call plan(max_batch) first");
  KAT_CHECK(Bi > 0 && Bi <= max_batch_, "KatModel::forward: batch ", Bi, " exceeds the planned maximum ", max_batch_);
  cur_batch_ = Bi;
  const int64_t B = Bi, N = cfg_.tokens(), D = cfg_.embed_dim, Hd = cfg_.mlp_hidden;
  const int64_t NH = cfg_.num_heads, P = cfg_.num_patches(), p = cfg_.patch_size;
  const int64_t K = int64_t(cfg_.in_chans) * p * p, BN = B * N;
  const float* W = params.data();

  // Patch embedding: im2col + GEMM, then [cls ; patches] + pos_embed.
  im2col_patches<float>(B, cfg_.in_chans, cfg_.img_size, cfg_.img_size, p, images, cols_);
  linear_forward<float>(B * P, K, D, cols_, W + off_pew_, W + off_peb_, tmp_);
  float* x0 = acts_.empty() ? x_final_ : acts_[0].x_in;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < N; ++t) {
      float* dst = x0 + (b * N + t) * D;
      const float* src = t == 0 ? W + off_cls_ : tmp_ + (b * P + t - 1) * D;
      const float* pos = W + off_pos_ + t * D;
      for (int64_t c = 0; c < D; ++c) dst[c] = src[c] + pos[c];
    }

  drop_path_active_ = train && cfg_.drop_path_rate > 0;
  for (int i = 0; i < cfg_.depth; ++i) {
    const BlockOffsets& o = blk_[i];
    BlockActs& a = acts_[i];
    float* x_out = (i + 1 < cfg_.depth) ? acts_[i + 1].x_in : x_final_;
    // Drop-path scales: rate grows linearly from 0 (block 0) to drop_path_rate (last block).
    const double rate = cfg_.depth > 1 ? cfg_.drop_path_rate * i / (cfg_.depth - 1) : cfg_.drop_path_rate;
    for (int64_t b = 0; b < B; ++b) {
      a.dp_attn[b] = a.dp_ffn[b] = 1.0f;
      if (drop_path_active_ && rate > 0) {
        KAT_ASSERT(rng != nullptr);
        const float keep = float(1.0 / (1.0 - rate));
        a.dp_attn[b] = rng->uniform() < rate ? 0.0f : keep;
        a.dp_ffn[b] = rng->uniform() < rate ? 0.0f : keep;
      }
    }
    // Attention branch.
    layernorm_forward<float>(BN, D, kLnEps, a.x_in, W + o.n1w, W + o.n1b, a.ln1, a.mean1, a.rstd1);
    linear_forward<float>(BN, D, 3 * D, a.ln1, W + o.qkvw, W + o.qkvb, a.qkv);
    attention_forward<float>(B, N, D, NH, a.qkv, a.att, a.probs);
    linear_forward<float>(BN, D, D, a.att, W + o.projw, W + o.projb, tmp_);
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      const float s = a.dp_attn[b];
      for (int64_t j = b * N * D; j < (b + 1) * N * D; ++j) a.x_mid[j] = a.x_in[j] + s * tmp_[j];
    }
    // FFN branch.
    layernorm_forward<float>(BN, D, kLnEps, a.x_mid, W + o.n2w, W + o.n2b, a.ln2, a.mean2, a.rstd2);
    if (cfg_.is_kat()) {
      GrkanShape s1{BN, int(D), cfg_.groups, cfg_.shared_numerator ? 1 : cfg_.groups, 5, 4};
      GrkanShape s2{BN, int(Hd), cfg_.groups, cfg_.shared_numerator ? 1 : cfg_.groups, 5, 4};
      grkan_forward<float>(s1, a.ln2, W + o.a1n, W + o.a1d, a.r1);
      linear_forward<float>(BN, D, Hd, a.r1, W + o.fc1w, W + o.fc1b, a.h);
      grkan_forward<float>(s2, a.h, W + o.a2n, W + o.a2d, a.r2);
    } else {
      linear_forward<float>(BN, D, Hd, a.ln2, W + o.fc1w, W + o.fc1b, a.h);
      gelu_forward<float>(BN * Hd, a.h, a.r2);
    }
    linear_forward<float>(BN, Hd, D, a.r2, W + o.fc2w, W + o.fc2b, tmp_);
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      const float s = a.dp_ffn[b];
      for (int64_t j = b * N * D; j < (b + 1) * N * D; ++j) x_out[j] = a.x_mid[j] + s * tmp_[j];
    }
  }
  layernorm_forward<float>(BN, D, kLnEps, x_final_, W + off_nw_, W + off_nb_, feat_, fmean_, frstd_);
  for (int64_t b = 0; b < B; ++b) std::memcpy(cls_ + b * D, feat_ + b * N * D, D * sizeof(float));
  linear_forward<float>(B, D, cfg_.num_classes, cls_, W + off_hw_, W + off_hb_, logits_);
  return logits_;
}

void KatModel::zero_grad() { std::fill(grads.begin(), grads.end(), 0.0f); }

void KatModel::backward(const float* dlogits) {
  KAT_CHECK(cur_batch_ > 0, "KatModel::backward: no forward pass to differentiate");
  const int64_t B = cur_batch_, N = cfg_.tokens(), D = cfg_.embed_dim, Hd = cfg_.mlp_hidden;
  const int64_t NH = cfg_.num_heads, P = cfg_.num_patches(), p = cfg_.patch_size;
  const int64_t K = int64_t(cfg_.in_chans) * p * p, BN = B * N;
  const float* W = params.data();
  float* G = grads.data();

  // Head and final norm: only token 0 receives a gradient from the head.
  linear_backward<float>(B, D, cfg_.num_classes, cls_, W + off_hw_, dlogits, d_cls_, G + off_hw_, G + off_hb_);
  std::fill_n(d_tmp_, BN * D, 0.0f);
  for (int64_t b = 0; b < B; ++b) std::memcpy(d_tmp_ + b * N * D, d_cls_ + b * D, D * sizeof(float));
  std::fill_n(d_x_, BN * D, 0.0f);
  layernorm_backward<float>(BN, D, x_final_, W + off_nw_, fmean_, frstd_, d_tmp_, d_x_, G + off_nw_, G + off_nb_);

  // d_x_ holds dL/d(residual stream) at the output of block i; walk the blocks backwards.
  for (int i = cfg_.depth - 1; i >= 0; --i) {
    const BlockOffsets& o = blk_[i];
    const BlockActs& a = acts_[i];
    // FFN branch: x_out = x_mid + s * fc2(...)  ->  d(fc2 out) = s * d_x
    scale_rows<float>(B, N * D, a.dp_ffn, d_x_, d_tmp_);
    linear_backward<float>(BN, Hd, D, a.r2, W + o.fc2w, d_tmp_, d_r_, G + o.fc2w, G + o.fc2b);
    std::fill_n(d_ln_, BN * D, 0.0f);
    if (cfg_.is_kat()) {
      GrkanShape s1{BN, int(D), cfg_.groups, cfg_.shared_numerator ? 1 : cfg_.groups, 5, 4};
      GrkanShape s2{BN, int(Hd), cfg_.groups, cfg_.shared_numerator ? 1 : cfg_.groups, 5, 4};
      grkan_backward<float>(s2, a.h, d_r_, W + o.a2n, W + o.a2d, d_h_, G + o.a2n, G + o.a2d);
      linear_backward<float>(BN, D, Hd, a.r1, W + o.fc1w, d_h_, d_att_, G + o.fc1w, G + o.fc1b);
      grkan_backward<float>(s1, a.ln2, d_att_, W + o.a1n, W + o.a1d, d_ln_, G + o.a1n, G + o.a1d);
    } else {
      gelu_backward<float>(BN * Hd, a.h, d_r_, d_h_);
      linear_backward<float>(BN, D, Hd, a.ln2, W + o.fc1w, d_h_, d_ln_, G + o.fc1w, G + o.fc1b);
    }
    // d_x (now d x_mid) += LN2 backward
    layernorm_backward<float>(BN, D, a.x_mid, W + o.n2w, a.mean2, a.rstd2, d_ln_, d_x_, G + o.n2w, G + o.n2b);
    // Attention branch: x_mid = x_in + s * proj(att)
    scale_rows<float>(B, N * D, a.dp_attn, d_x_, d_tmp_);
    linear_backward<float>(BN, D, D, a.att, W + o.projw, d_tmp_, d_att_, G + o.projw, G + o.projb);
    attention_backward<float>(B, N, D, NH, a.qkv, a.probs, d_att_, d_qkv_);
    linear_backward<float>(BN, D, 3 * D, a.ln1, W + o.qkvw, d_qkv_, d_ln_, G + o.qkvw, G + o.qkvb);
    layernorm_backward<float>(BN, D, a.x_in, W + o.n1w, a.mean1, a.rstd1, d_ln_, d_x_, G + o.n1w, G + o.n1b);
  }

  // Embedding: d_x_ = dL/d tokens.
  for (int64_t b = 0; b < B; ++b) {
    const float* dt = d_x_ + b * N * D;
    for (int64_t c = 0; c < D; ++c) G[off_cls_ + c] += dt[c];
  }
  for (int64_t t = 0; t < N; ++t)
    for (int64_t b = 0; b < B; ++b) {
      const float* dt = d_x_ + (b * N + t) * D;
      float* gp = G + off_pos_ + t * D;
      for (int64_t c = 0; c < D; ++c) gp[c] += dt[c];
    }
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; ++b)
    std::memcpy(tmp_ + b * P * D, d_x_ + (b * N + 1) * D, P * D * sizeof(float));
  linear_backward<float>(B * P, K, D, cols_, W + off_pew_, tmp_, nullptr, G + off_pew_, G + off_peb_);
}

std::string KatModel::first_nonfinite() const {
  for (const auto& s : table_.specs())
    for (int64_t i = 0; i < s.numel; ++i)
      if (!std::isfinite(params[s.offset + i])) return "parameter " + s.name;
  const int64_t B = cur_batch_, N = cfg_.tokens(), D = cfg_.embed_dim, Hd = cfg_.mlp_hidden;
  auto bad = [](const float* p, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(p[i])) return true;
    return false;
  };
  if (cfg_.depth > 0 && bad(acts_[0].x_in, B * N * D)) return "patch_embed output (tokens)";
  for (int i = 0; i < cfg_.depth; ++i) {
    const BlockActs& a = acts_[i];
    const std::string b = "blocks." + std::to_string(i) + ".";
    const std::pair<const char*, std::pair<const float*, int64_t>> stages[] = {
        {"norm1 output", {a.ln1, B * N * D}},  {"attn.qkv output", {a.qkv, 3 * B * N * D}},
        {"attn output", {a.att, B * N * D}},    {"attention residual", {a.x_mid, B * N * D}},
        {"norm2 output", {a.ln2, B * N * D}},   {"mlp.act1 output", {a.r1, a.r1 ? B * N * D : 0}},
        {"mlp.fc1 output", {a.h, B * N * Hd}},  {cfg_.is_kat() ? "mlp.act2 output" : "mlp.act output", {a.r2, B * N * Hd}}};
    for (const auto& [name, buf] : stages)
      if (buf.first && bad(buf.first, buf.second)) return b + name;
    const float* out = (i + 1 < cfg_.depth) ? acts_[i + 1].x_in : x_final_;
    if (bad(out, B * N * D)) return b + "mlp.fc2 output (residual)";
  }
  if (bad(feat_, B * N * D)) return "norm output";
  if (bad(logits_, B * cfg_.num_classes)) return "head output (logits)";
  return "";
}

void check_input_shape(const ModelConfig& cfg, const std::vector<int64_t>& shape, const std::string& what) {
  const std::vector<int64_t> want = {-1, cfg.in_chans, cfg.img_size, cfg.img_size};
  bool ok = shape.size() == 4 && shape[0] > 0;
  for (size_t i = 1; ok && i < 4; ++i) ok = shape[i] == want[i];
  KAT_CHECK(ok, what, " has shape ", shape_str(shape), " but model '", cfg.name, "' expects (N, ",
            cfg.in_chans, ", ", cfg.img_size, ", ", cfg.img_size, ")");
}

}  // namespace kat
