#include "kat/model/kat_model.h"

#include "kat/model/drop_path.h"
#include "model/kat_model_fp8.h"
#include "model/mimetic_init.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kat/core/error.h"
#include "kat/ops/grkan.h"
#include "ops/cpu_ops.h"

namespace kat {

using namespace ops;

namespace {
constexpr float kLnEps = 1e-6f;

// α = Var[x] / E[F(x)^2] for x ~ N(0,1) (docs/MODEL.md §3): the variance-preserving gain of an activation.
double activation_gain(const std::string& act) {
  if (act == "swish") return 2.8178;
  if (act == "gelu") return 2.3568;
  return 1.0;  // identity
}

// The model's glue between the ops, named as the CUDA model's (ops/cuda/embed.h, elementwise.h)
// so that the two forward/backward lists read side by side.

// x (B, N, D) = [cls ; patches (B, N-1, D)] + pos (N, D).
void tokens_forward(int64_t B, int64_t N, int64_t D, const float* patches, const float* cls, const float* pos,
                    float* x) {
  ops::check_tokens_shape(B, N, D, "tokens_forward");
  const int64_t P = N - 1;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < N; ++t) {
      float* dst = x + (b * N + t) * D;
      const float* src = t == 0 ? cls : patches + (b * P + t - 1) * D;
      const float* pt = pos + t * D;
      for (int64_t c = 0; c < D; ++c) dst[c] = src[c] + pt[c];
    }
}

// dcls (D) += sum_b dx[b, 0];  dpos (N, D) += sum_b dx[b];  dpatches (B, N-1, D) = dx[:, 1:].
void tokens_backward(int64_t B, int64_t N, int64_t D, const float* dx, float* dcls, float* dpos, float* dpatches) {
  ops::check_tokens_shape(B, N, D, "tokens_backward");
  const int64_t P = N - 1;
  for (int64_t b = 0; b < B; ++b) {
    const float* dt = dx + b * N * D;
    for (int64_t c = 0; c < D; ++c) dcls[c] += dt[c];
  }
  for (int64_t t = 0; t < N; ++t)
    for (int64_t b = 0; b < B; ++b) {
      const float* dt = dx + (b * N + t) * D;
      float* gp = dpos + t * D;
      for (int64_t c = 0; c < D; ++c) gp[c] += dt[c];
    }
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; ++b) std::memcpy(dpatches + b * P * D, dx + (b * N + 1) * D, P * D * sizeof(float));
}

// y[b] = x[b] + scale[b] * f[b], per_sample values per sample (the drop-path residual).
void residual_add(int64_t B, int64_t per_sample, const float* x, const float* f, const float* scale, float* y) {
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    const float s = scale[b];
    for (int64_t j = b * per_sample; j < (b + 1) * per_sample; ++j) y[j] = x[j] + s * f[j];
  }
}
}  // namespace

KatModel::KatModel(const ModelConfig& cfg) : cfg_(cfg), layout_((cfg_.validate(), cfg_), ModelLayout::kCpuAlign) {
  params.assign(layout_.total(), 0.0f);
  grads.assign(layout_.total(), 0.0f);
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
  const ModelLayout& L = layout_;
  fill(L.cls_token, D, [&] { return rng.normal() * 1e-6; });
  fill(L.pos_embed, cfg_.tokens() * D, trunc02);
  {  // PyTorch's Conv2d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    const int64_t fan_in = int64_t(cfg_.in_chans) * cfg_.patch_size * cfg_.patch_size;
    const double bound = 1.0 / std::sqrt(double(fan_in));
    fill(L.patch_w, D * fan_in, [&] { return rng.uniform(-bound, bound); });
    fill(L.patch_b, D, [&] { return rng.uniform(-bound, bound); });
  }
  std::vector<double> a1, b1, a2, b2;
  if (cfg_.is_kat()) {
    grkan_init_coefficients(cfg_.act1_init, a1, b1);
    grkan_init_coefficients(cfg_.act2_init, a2, b2);
  }
  const int64_t An = cfg_.shared_numerator ? 1 : cfg_.groups;
  for (const BlockParams& o : L.blocks) {
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
  std::fill_n(params.data() + L.norm_w, D, 1.0f);
  fill(L.head_w, int64_t(cfg_.num_classes) * D, trunc02);
}

void KatModel::plan(int max_batch) {
  KAT_CHECK(max_batch > 0, "batch size must be > 0, got ", max_batch);
  if (max_batch == max_batch_) return;
  max_batch_ = max_batch;
  // Pass 1 counts, pass 2 carves: one arena, 64-byte aligned sub-buffers.
  int64_t cursor = 0;
  float* base = nullptr;
  auto take = [&](const char*, std::initializer_list<int64_t> shape, bool) -> void* {
    float* p = base ? base + cursor : nullptr;
    cursor += (shape_numel(shape) + 15) / 16 * 16;
    return p;
  };
  const ActivationPlanOptions opts{/*training=*/true, SoftmaxSaved::Probabilities, /*device_loss=*/false};
  for (int pass = 0; pass < 2; ++pass) {
    cursor = 0;
    plan_activations(cfg_, max_batch, opts, acts_, take);
    if (pass == 0) {
      arena_.assign(cursor, 0.0f);
      base = arena_.data();
    }
  }
}

const float* KatModel::features() const { return acts_.feat; }

const float* KatModel::forward(const float* images, int Bi, bool train, Rng* rng) {
  KAT_CHECK(max_batch_ > 0, "KatModel::forward: call plan(max_batch) first");
  KAT_CHECK(Bi > 0 && Bi <= max_batch_, "KatModel::forward: batch ", Bi, " exceeds the planned maximum ",
            max_batch_);
  cur_batch_ = Bi;
  fp8_train_pass_ = train;  // FP8: delayed scaling (and the history's advance) in training passes only
  const int64_t B = Bi, N = cfg_.tokens(), D = cfg_.embed_dim, Hd = cfg_.mlp_hidden;
  const int64_t NH = cfg_.num_heads, P = cfg_.num_patches(), p = cfg_.patch_size;
  const int64_t K = int64_t(cfg_.in_chans) * p * p, BN = B * N;
  const float* W = params.data();
  const ModelLayout& L = layout_;

  // Patch embedding: im2col + GEMM, then [cls ; patches] + pos_embed.
  im2col_patches<float>(B, cfg_.in_chans, cfg_.img_size, cfg_.img_size, p, images, acts_.cols);
  linear_forward<float>(B * P, K, D, acts_.cols, W + L.patch_w, W + L.patch_b, acts_.tmp);
  float* x0 = acts_.blocks.empty() ? acts_.x_final : acts_.blocks[0].x_in;
  tokens_forward(B, N, D, acts_.tmp, W + L.cls_token, W + L.pos_embed, x0);

  // Drop-path scales (depth, 2, B), drawn in the order every backend draws them.
  drop_path_active_ = drop_path_active(cfg_, train);
  if (drop_path_active_) {
    KAT_CHECK(rng != nullptr, "KatModel::forward: a training forward with drop-path needs an Rng");
    draw_drop_path(cfg_, B, *rng, acts_.drop_path);
  } else {
    std::fill_n(acts_.drop_path, drop_path_scale_count(cfg_, B), 1.0f);
  }
  for (int i = 0; i < cfg_.depth; ++i) {
    const BlockParams& o = L.blocks[i];
    BlockActivations<float*>& a = acts_.blocks[i];
    float* x_out = (i + 1 < cfg_.depth) ? acts_.blocks[i + 1].x_in : acts_.x_final;
    const float* sa = acts_.drop_path + int64_t(i) * 2 * B;  // (B) 0 or 1/(1-rate); 1 in eval
    const float* sf = sa + B;
    // Attention branch.
    layernorm_forward<float>(BN, D, kLnEps, a.x_in, W + o.n1w, W + o.n1b, a.ln1, a.mean1, a.rstd1);
    if (fp8_)
      fp8_linear_forward(i, 0, BN, D, 3 * D, a.ln1, o.qkvw, o.qkvb, a.qkv);
    else
      linear_forward<float>(BN, D, 3 * D, a.ln1, W + o.qkvw, W + o.qkvb, a.qkv);
    attention_forward<float>(B, N, D, NH, a.qkv, a.att, a.softmax);
    if (fp8_)
      fp8_linear_forward(i, 1, BN, D, D, a.att, o.projw, o.projb, acts_.tmp);
    else
      linear_forward<float>(BN, D, D, a.att, W + o.projw, W + o.projb, acts_.tmp);
    residual_add(B, N * D, a.x_in, acts_.tmp, sa, a.x_mid);
    // FFN branch.
    layernorm_forward<float>(BN, D, kLnEps, a.x_mid, W + o.n2w, W + o.n2b, a.ln2, a.mean2, a.rstd2);
    if (cfg_.is_kat()) {
      GrkanShape s1{BN, int(D), cfg_.groups, cfg_.shared_numerator ? 1 : cfg_.groups, 5, 4};
      GrkanShape s2{BN, int(Hd), cfg_.groups, cfg_.shared_numerator ? 1 : cfg_.groups, 5, 4};
      grkan_forward<float>(s1, a.ln2, W + o.a1n, W + o.a1d, a.r1);
      if (fp8_)
        fp8_linear_forward(i, 2, BN, D, Hd, a.r1, o.fc1w, o.fc1b, a.h);
      else
        linear_forward<float>(BN, D, Hd, a.r1, W + o.fc1w, W + o.fc1b, a.h);
      grkan_forward<float>(s2, a.h, W + o.a2n, W + o.a2d, a.r2);
    } else {
      if (fp8_)
        fp8_linear_forward(i, 2, BN, D, Hd, a.ln2, o.fc1w, o.fc1b, a.h);
      else
        linear_forward<float>(BN, D, Hd, a.ln2, W + o.fc1w, W + o.fc1b, a.h);
      gelu_forward<float>(BN * Hd, a.h, a.r2);
    }
    if (fp8_)
      fp8_linear_forward(i, 3, BN, Hd, D, a.r2, o.fc2w, o.fc2b, acts_.tmp);
    else
      linear_forward<float>(BN, Hd, D, a.r2, W + o.fc2w, W + o.fc2b, acts_.tmp);
    residual_add(B, N * D, a.x_mid, acts_.tmp, sf, x_out);
  }
  layernorm_forward<float>(BN, D, kLnEps, acts_.x_final, W + L.norm_w, W + L.norm_b, acts_.feat, acts_.fmean,
                           acts_.frstd);
  for (int64_t b = 0; b < B; ++b) std::memcpy(acts_.cls + b * D, acts_.feat + b * N * D, D * sizeof(float));
  linear_forward<float>(B, D, cfg_.num_classes, acts_.cls, W + L.head_w, W + L.head_b, acts_.logits);
  return acts_.logits;
}

void KatModel::zero_grad() { std::fill(grads.begin(), grads.end(), 0.0f); }

void KatModel::backward(const float* dlogits) {
  KAT_CHECK(cur_batch_ > 0, "KatModel::backward: no forward pass to differentiate");
  const int64_t B = cur_batch_, N = cfg_.tokens(), D = cfg_.embed_dim, Hd = cfg_.mlp_hidden;
  const int64_t NH = cfg_.num_heads, P = cfg_.num_patches(), p = cfg_.patch_size;
  const int64_t K = int64_t(cfg_.in_chans) * p * p, BN = B * N;
  const float* W = params.data();
  const ModelLayout& L = layout_;
  float* G = grads.data();

  // Head and final norm: only token 0 receives a gradient from the head.
  linear_backward<float>(B, D, cfg_.num_classes, acts_.cls, W + L.head_w, dlogits, acts_.d_cls, G + L.head_w,
                         G + L.head_b);
  std::fill_n(acts_.d_tmp, BN * D, 0.0f);
  for (int64_t b = 0; b < B; ++b) std::memcpy(acts_.d_tmp + b * N * D, acts_.d_cls + b * D, D * sizeof(float));
  std::fill_n(acts_.d_x, BN * D, 0.0f);
  layernorm_backward<float>(BN, D, acts_.x_final, W + L.norm_w, acts_.fmean, acts_.frstd, acts_.d_tmp, acts_.d_x,
                            G + L.norm_w, G + L.norm_b);

  // d_x holds dL/d(residual stream) at the output of block i; walk the blocks backwards.
  for (int i = cfg_.depth - 1; i >= 0; --i) {
    const BlockParams& o = L.blocks[i];
    const BlockActivations<float*>& a = acts_.blocks[i];
    const float* sa = acts_.drop_path + int64_t(i) * 2 * B;  // drop-path scales of the forward
    const float* sf = sa + B;
    // FFN branch: x_out = x_mid + s * fc2(...)  ->  d(fc2 out) = s * d_x
    scale_rows<float>(B, N * D, sf, acts_.d_x, acts_.d_tmp);
    if (fp8_)
      fp8_linear_backward(i, 3, BN, Hd, D, a.r2, acts_.d_tmp, acts_.d_r, o.fc2w, o.fc2b);
    else
      linear_backward<float>(BN, Hd, D, a.r2, W + o.fc2w, acts_.d_tmp, acts_.d_r, G + o.fc2w, G + o.fc2b);
    std::fill_n(acts_.d_ln, BN * D, 0.0f);
    if (cfg_.is_kat()) {
      GrkanShape s1{BN, int(D), cfg_.groups, cfg_.shared_numerator ? 1 : cfg_.groups, 5, 4};
      GrkanShape s2{BN, int(Hd), cfg_.groups, cfg_.shared_numerator ? 1 : cfg_.groups, 5, 4};
      grkan_backward<float>(s2, a.h, acts_.d_r, W + o.a2n, W + o.a2d, acts_.d_h, G + o.a2n, G + o.a2d);
      if (fp8_)
        fp8_linear_backward(i, 2, BN, D, Hd, a.r1, acts_.d_h, acts_.d_att, o.fc1w, o.fc1b);
      else
        linear_backward<float>(BN, D, Hd, a.r1, W + o.fc1w, acts_.d_h, acts_.d_att, G + o.fc1w, G + o.fc1b);
      grkan_backward<float>(s1, a.ln2, acts_.d_att, W + o.a1n, W + o.a1d, acts_.d_ln, G + o.a1n, G + o.a1d);
    } else {
      gelu_backward<float>(BN * Hd, a.h, acts_.d_r, acts_.d_h);
      if (fp8_)
        fp8_linear_backward(i, 2, BN, D, Hd, a.ln2, acts_.d_h, acts_.d_ln, o.fc1w, o.fc1b);
      else
        linear_backward<float>(BN, D, Hd, a.ln2, W + o.fc1w, acts_.d_h, acts_.d_ln, G + o.fc1w, G + o.fc1b);
    }
    // d_x (now d x_mid) += LN2 backward
    layernorm_backward<float>(BN, D, a.x_mid, W + o.n2w, a.mean2, a.rstd2, acts_.d_ln, acts_.d_x, G + o.n2w,
                              G + o.n2b);
    // Attention branch: x_mid = x_in + s * proj(att)
    scale_rows<float>(B, N * D, sa, acts_.d_x, acts_.d_tmp);
    if (fp8_)
      fp8_linear_backward(i, 1, BN, D, D, a.att, acts_.d_tmp, acts_.d_att, o.projw, o.projb);
    else
      linear_backward<float>(BN, D, D, a.att, W + o.projw, acts_.d_tmp, acts_.d_att, G + o.projw, G + o.projb);
    attention_backward<float>(B, N, D, NH, a.qkv, a.softmax, acts_.d_att, acts_.d_qkv);
    if (fp8_)
      fp8_linear_backward(i, 0, BN, D, 3 * D, a.ln1, acts_.d_qkv, acts_.d_ln, o.qkvw, o.qkvb);
    else
      linear_backward<float>(BN, D, 3 * D, a.ln1, W + o.qkvw, acts_.d_qkv, acts_.d_ln, G + o.qkvw, G + o.qkvb);
    layernorm_backward<float>(BN, D, a.x_in, W + o.n1w, a.mean1, a.rstd1, acts_.d_ln, acts_.d_x, G + o.n1w,
                              G + o.n1b);
  }

  // Embedding: d_x = dL/d tokens.
  tokens_backward(B, N, D, acts_.d_x, G + L.cls_token, G + L.pos_embed, acts_.tmp);
  linear_backward<float>(B * P, K, D, acts_.cols, W + L.patch_w, acts_.tmp, nullptr, G + L.patch_w, G + L.patch_b);
}

std::string KatModel::first_nonfinite() const {
  for (const auto& s : table().specs())
    for (int64_t i = 0; i < s.numel; ++i)
      if (!std::isfinite(params[s.offset + i])) return "parameter " + s.name;
  const int64_t B = cur_batch_, N = cfg_.tokens(), D = cfg_.embed_dim, Hd = cfg_.mlp_hidden;
  auto bad = [](const float* p, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(p[i])) return true;
    return false;
  };
  if (cfg_.depth > 0 && bad(acts_.blocks[0].x_in, B * N * D)) return "patch_embed output (tokens)";
  for (int i = 0; i < cfg_.depth; ++i) {
    const BlockActivations<float*>& a = acts_.blocks[i];
    const std::string b = "blocks." + std::to_string(i) + ".";
    const std::pair<const char*, std::pair<const float*, int64_t>> stages[] = {
        {"norm1 output", {a.ln1, B * N * D}},
        {"attn.qkv output", {a.qkv, 3 * B * N * D}},
        {"attn output", {a.att, B * N * D}},
        {"attention residual", {a.x_mid, B * N * D}},
        {"norm2 output", {a.ln2, B * N * D}},
        {"mlp.act1 output", {a.r1, a.r1 ? B * N * D : 0}},
        {"mlp.fc1 output", {a.h, B * N * Hd}},
        {cfg_.is_kat() ? "mlp.act2 output" : "mlp.act output", {a.r2, B * N * Hd}}};
    for (const auto& [name, buf] : stages)
      if (buf.first && bad(buf.first, buf.second)) return b + name;
    const float* out = (i + 1 < cfg_.depth) ? acts_.blocks[i + 1].x_in : acts_.x_final;
    if (bad(out, B * N * D)) return b + "mlp.fc2 output (residual)";
  }
  if (bad(acts_.feat, B * N * D)) return "norm output";
  if (bad(acts_.logits, B * cfg_.num_classes)) return "head output (logits)";
  return "";
}

void check_input_shape(const ModelConfig& cfg, const std::vector<int64_t>& shape, const std::string& what) {
  const std::vector<int64_t> want = {-1, cfg.in_chans, cfg.img_size, cfg.img_size};
  bool ok = shape.size() == 4 && shape[0] > 0;
  for (size_t i = 1; ok && i < 4; ++i) ok = shape[i] == want[i];
  KAT_CHECK(ok, what, " has shape ", shape_str(shape), " but model '", cfg.name, "' expects (N, ", cfg.in_chans,
            ", ", cfg.img_size, ", ", cfg.img_size, ")");
}

}  // namespace kat
