// KatModelCuda (see kat_model_cuda.h): host code enqueuing the kernels of src/ops/cuda. Compiled
// into katlib only when the CUDA backend is on (KAT_HAVE_CUDA); an empty unit otherwise.
#ifdef KAT_HAVE_CUDA
#include "model/kat_model_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "ops/cuda/attention.h"
#include "ops/cuda/cross_entropy.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/elementwise.h"
#include "ops/cuda/embed.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/grkan.h"
#include "ops/cuda/layernorm.h"
#include "ops/cuda/optim.h"

namespace kat {

namespace {
constexpr float kLnEps = 1e-6f;
constexpr int64_t kAlignElems = 128;
int64_t round_up(int64_t n, int64_t a) { return (n + a - 1) / a * a; }
}  // namespace

KatModelCuda::KatModelCuda(const ModelConfig& cfg, Precision prec, cudaStream_t stream)
    : cfg_(cfg), prec_(prec), st_(prec == Precision::F32 ? DType::F32 : DType::BF16), stream_(stream) {
  cfg_.validate();
  const int64_t D = cfg.embed_dim, Hd = cfg.mlp_hidden, C = cfg.in_chans, p = cfg.patch_size;
  const int64_t G = cfg.groups, An = cfg.shared_numerator ? 1 : G;
  cuda::attention_check_shape(cfg.tokens(), D, cfg.num_heads);
  // Same table as KatModel (timm state_dict order); device offsets padded to kAlignElems.
  auto add = [&](const std::string& name, std::vector<int64_t> shape, ParamKind kind) {
    table_.add(name, std::move(shape), kind);
    const int64_t numel = table_.specs().back().numel;
    dev_off_.push_back(dev_total_);
    const int64_t off = dev_total_;
    dev_total_ = round_up(dev_total_ + numel, kAlignElems);
    return off;
  };
  off_cls_ = add("cls_token", {1, 1, D}, ParamKind::Embed);
  off_pos_ = add("pos_embed", {1, cfg.tokens(), D}, ParamKind::Embed);
  off_pew_ = add("patch_embed.proj.weight", {D, C, p, p}, ParamKind::Weight);
  off_peb_ = add("patch_embed.proj.bias", {D}, ParamKind::Bias);
  for (int i = 0; i < cfg.depth; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    BlockOffsets o;
    o.n1w = add(b + "norm1.weight", {D}, ParamKind::Norm);
    o.n1b = add(b + "norm1.bias", {D}, ParamKind::Norm);
    o.qkvw = add(b + "attn.qkv.weight", {3 * D, D}, ParamKind::Weight);
    o.qkvb = add(b + "attn.qkv.bias", {3 * D}, ParamKind::Bias);
    o.projw = add(b + "attn.proj.weight", {D, D}, ParamKind::Weight);
    o.projb = add(b + "attn.proj.bias", {D}, ParamKind::Bias);
    o.n2w = add(b + "norm2.weight", {D}, ParamKind::Norm);
    o.n2b = add(b + "norm2.bias", {D}, ParamKind::Norm);
    if (cfg.is_kat()) {
      o.a1n = add(b + "mlp.act1.weight_numerator", {An, 6}, ParamKind::Rational);
      o.a1d = add(b + "mlp.act1.weight_denominator", {G, 4}, ParamKind::Rational);
    }
    o.fc1w = add(b + "mlp.fc1.weight", {Hd, D}, ParamKind::Weight);
    o.fc1b = add(b + "mlp.fc1.bias", {Hd}, ParamKind::Bias);
    if (cfg.is_kat()) {
      o.a2n = add(b + "mlp.act2.weight_numerator", {An, 6}, ParamKind::Rational);
      o.a2d = add(b + "mlp.act2.weight_denominator", {G, 4}, ParamKind::Rational);
    }
    o.fc2w = add(b + "mlp.fc2.weight", {D, Hd}, ParamKind::Weight);
    o.fc2b = add(b + "mlp.fc2.bias", {D}, ParamKind::Bias);
    blk_.push_back(o);
  }
  off_nw_ = add("norm.weight", {D}, ParamKind::Norm);
  off_nb_ = add("norm.bias", {D}, ParamKind::Norm);
  off_hw_ = add("head.weight", {cfg.num_classes, D}, ParamKind::Weight);
  off_hb_ = add("head.bias", {cfg.num_classes}, ParamKind::Bias);

  gemm_ = std::make_unique<cuda::Gemm>();
  const size_t nb = size_t(dev_total_) * sizeof(float);
  KAT_CUDA_CHECK(cudaMalloc(&params_, nb));
  KAT_CUDA_CHECK(cudaMalloc(&grads_, nb));
  KAT_CUDA_CHECK(cudaMalloc(&m_, nb));
  KAT_CUDA_CHECK(cudaMalloc(&v_, nb));
  KAT_CUDA_CHECK(cudaMalloc(&decay_, size_t(dev_total_)));
  if (st_ == DType::BF16) KAT_CUDA_CHECK(cudaMalloc(&wbf16_, size_t(dev_total_) * 2));
  KAT_CUDA_CHECK(cudaMemset(params_, 0, nb));
  KAT_CUDA_CHECK(cudaMemset(grads_, 0, nb));
  KAT_CUDA_CHECK(cudaMemset(m_, 0, nb));
  KAT_CUDA_CHECK(cudaMemset(v_, 0, nb));
  if (wbf16_) KAT_CUDA_CHECK(cudaMemset(wbf16_, 0, size_t(dev_total_) * 2));
  KAT_CUDA_CHECK(cudaMalloc(&clip_ws_, cuda::clip_grad_norm_workspace_bytes()));
  KAT_CUDA_CHECK(cudaMemset(clip_ws_, 0, cuda::clip_grad_norm_workspace_bytes()));
  cudaEvent_t ev;
  KAT_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  dp_event_ = ev;
  set_optimizer(AdamWConfig{});
}

KatModelCuda::~KatModelCuda() {
  cudaStreamSynchronize(stream_);
  for (void* p : {static_cast<void*>(params_), static_cast<void*>(grads_), static_cast<void*>(m_),
                  static_cast<void*>(v_), static_cast<void*>(decay_), wbf16_, arena_, ws_,
                  static_cast<void*>(ema_), clip_ws_})
    if (p) cudaFree(p);
  if (dp_host_) cudaFreeHost(dp_host_);
  if (dp_event_) cudaEventDestroy(static_cast<cudaEvent_t>(dp_event_));
}

int64_t KatModelCuda::device_offset(const std::string& name) const {
  const ParamSpec& s = table_.at(name);
  for (size_t i = 0; i < table_.specs().size(); ++i)
    if (table_.specs()[i].offset == s.offset) return dev_off_[i];
  return -1;
}

namespace {
// Host flat (CPU table) layout -> device padded layout (padding zero). Synchronous.
void upload_padded(const ParamTable& t, const std::vector<int64_t>& dev_off, int64_t total, const float* host,
                   float* dev, cudaStream_t s) {
  std::vector<float> buf(size_t(total), 0.0f);
  const auto& specs = t.specs();
  for (size_t i = 0; i < specs.size(); ++i)
    std::memcpy(buf.data() + dev_off[i], host + specs[i].offset, size_t(specs[i].numel) * sizeof(float));
  KAT_CUDA_CHECK(cudaMemcpyAsync(dev, buf.data(), buf.size() * sizeof(float), cudaMemcpyHostToDevice, s));
  KAT_CUDA_CHECK(cudaStreamSynchronize(s));
}
}  // namespace

void KatModelCuda::upload_params(const float* host) {
  KAT_CHECK(!ema_swapped_, "KatModelCuda::upload_params: the EMA weights are swapped in (call swap_ema first)");
  upload_padded(table_, dev_off_, dev_total_, host, params_, stream_);
  if (wbf16_) cuda::convert_f32_to_bf16(dev_total_, params_, wbf16_, stream_);
  KAT_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void KatModelCuda::divide_dlogits(float divisor) {
  KAT_CHECK(cur_batch_ > 0, "KatModelCuda::divide_dlogits: no forward pass");
  cuda::divide_inplace(int64_t(cur_batch_) * cfg_.num_classes, st_, dlogits_, divisor, stream_);
}

void KatModelCuda::clip_grad_norm(double max_norm) {
  cuda::clip_grad_norm(dev_total_, grads_, max_norm, clip_ws_, stream_);
}

double KatModelCuda::last_grad_norm() const {
  double v = 0;
  KAT_CUDA_CHECK(cudaMemcpyAsync(&v, cuda::clip_grad_norm_result(clip_ws_), sizeof v, cudaMemcpyDeviceToHost, stream_));
  KAT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return v;
}

void KatModelCuda::ema_init(const float* host) {
  KAT_CHECK(!ema_swapped_, "KatModelCuda::ema_init: the EMA weights are swapped in");
  if (!ema_) KAT_CUDA_CHECK(cudaMalloc(&ema_, size_t(dev_total_) * sizeof(float)));
  upload_padded(table_, dev_off_, dev_total_, host, ema_, stream_);
}

void KatModelCuda::ema_update(double decay) {
  KAT_CHECK(ema_ && !ema_swapped_, "KatModelCuda::ema_update: ", ema_ ? "the EMA weights are swapped in" : "call ema_init first");
  cuda::ema_update(dev_total_, ema_, params_, decay, stream_);
}

void KatModelCuda::swap_ema() {
  KAT_CHECK(ema_, "KatModelCuda::swap_ema: call ema_init first");
  std::swap(params_, ema_);
  ema_swapped_ = !ema_swapped_;
  if (wbf16_) cuda::convert_f32_to_bf16(dev_total_, params_, wbf16_, stream_);
}

namespace {
void download_padded(const ParamTable& t, const std::vector<int64_t>& dev_off, int64_t total,
                     const float* dev, float* host, cudaStream_t s) {
  std::vector<float> buf(static_cast<size_t>(total));
  KAT_CUDA_CHECK(cudaMemcpyAsync(buf.data(), dev, buf.size() * sizeof(float), cudaMemcpyDeviceToHost, s));
  KAT_CUDA_CHECK(cudaStreamSynchronize(s));
  const auto& specs = t.specs();
  for (size_t i = 0; i < specs.size(); ++i)
    std::memcpy(host + specs[i].offset, buf.data() + dev_off[i], size_t(specs[i].numel) * sizeof(float));
}
}  // namespace

void KatModelCuda::download_params(float* host) const {  // the master weights, also while the EMA is swapped in
  download_padded(table_, dev_off_, dev_total_, ema_swapped_ ? ema_ : params_, host, stream_);
}
void KatModelCuda::download_ema(float* host) const {
  KAT_CHECK(ema_, "KatModelCuda::download_ema: call ema_init first");
  download_padded(table_, dev_off_, dev_total_, ema_swapped_ ? params_ : ema_, host, stream_);
}
void KatModelCuda::download_grads(float* host) const {
  download_padded(table_, dev_off_, dev_total_, grads_, host, stream_);
}

void KatModelCuda::download_moments(float* m_host, float* v_host) const {
  download_padded(table_, dev_off_, dev_total_, m_, m_host, stream_);
  download_padded(table_, dev_off_, dev_total_, v_, v_host, stream_);
}

void KatModelCuda::upload_moments(const float* m_host, const float* v_host, int64_t steps) {
  upload_padded(table_, dev_off_, dev_total_, m_host, m_, stream_);
  upload_padded(table_, dev_off_, dev_total_, v_host, v_, stream_);
  opt_t_ = steps;
}

namespace {
// n values of storage st on the device -> fp32 on the host. Synchronous.
void download_storage(const void* dev, int64_t n, DType st, float* host, cudaStream_t s) {
  if (st == DType::F32) {
    KAT_CUDA_CHECK(cudaMemcpyAsync(host, dev, size_t(n) * sizeof(float), cudaMemcpyDeviceToHost, s));
    KAT_CUDA_CHECK(cudaStreamSynchronize(s));
    return;
  }
  std::vector<uint16_t> raw(static_cast<size_t>(n));
  KAT_CUDA_CHECK(cudaMemcpyAsync(raw.data(), dev, raw.size() * 2, cudaMemcpyDeviceToHost, s));
  KAT_CUDA_CHECK(cudaStreamSynchronize(s));
  for (int64_t i = 0; i < n; ++i) {  // bf16 -> fp32 is exact: the bits are the top half
    const uint32_t bits = uint32_t(raw[size_t(i)]) << 16;
    std::memcpy(host + i, &bits, sizeof(float));
  }
}
}  // namespace

void KatModelCuda::download_logits(float* host) const {
  download_storage(logits_, int64_t(cur_batch_) * cfg_.num_classes, st_, host, stream_);
}

void KatModelCuda::download_features(float* host) const {
  download_storage(feat_, int64_t(cur_batch_) * cfg_.tokens() * cfg_.embed_dim, st_, host, stream_);
}

void KatModelCuda::set_optimizer(const AdamWConfig& cfg) {
  opt_cfg_ = cfg;
  std::vector<uint8_t> mask(size_t(dev_total_), 0);
  const auto& specs = table_.specs();
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParamSpec& s = specs[i];
    const bool d = s.kind == ParamKind::Weight || (s.kind == ParamKind::Rational && cfg.decay_rational);
    std::fill_n(mask.begin() + dev_off_[i], s.numel, uint8_t(d));
  }
  KAT_CUDA_CHECK(cudaMemcpy(decay_, mask.data(), mask.size(), cudaMemcpyHostToDevice));
}

void KatModelCuda::adamw_step(double lr) {
  KAT_CHECK(!ema_swapped_, "KatModelCuda::adamw_step: the EMA weights are swapped in (call swap_ema first)");
  ++opt_t_;
  const auto sc = cuda::adamw_scalars(lr, opt_cfg_.beta1, opt_cfg_.beta2, opt_cfg_.eps, opt_cfg_.weight_decay, opt_t_);
  cuda::adamw_step(dev_total_, sc, params_, grads_, m_, v_, decay_, wbf16_, stream_);
}

void* KatModelCuda::sub(void* base, int64_t elems) const {
  return static_cast<char*>(base) + elems * int64_t(dtype_size(st_));
}

// The bias operand of the GEMM epilogue in bf16 mode (its bf16 working copy; see ops/cuda/gemm.h), or
// null to add the fp32 bias with the separate kernel (KAT_GEMM_BIAS_KERNEL=1, for comparison).
const void* KatModelCuda::bias_copy(int64_t off) const {
  static const bool separate = [] {
    const char* e = std::getenv("KAT_GEMM_BIAS_KERNEL");
    return e && *e && *e != '0';
  }();
  return wbf16_ && !separate ? w(off) : nullptr;
}

const void* KatModelCuda::w(int64_t off) const {
  if (wbf16_) return static_cast<const char*>(wbf16_) + off * 2;
  return params_ + off;
}

void KatModelCuda::plan(int max_batch, bool training) {
  KAT_CHECK(max_batch > 0, "batch size must be > 0, got ", max_batch);
  if (max_batch == max_batch_ && training == training_plan_) return;
  training_plan_ = training;
  KAT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (arena_) KAT_CUDA_CHECK(cudaFree(arena_));
  if (ws_) KAT_CUDA_CHECK(cudaFree(ws_));
  if (dp_host_) KAT_CUDA_CHECK(cudaFreeHost(dp_host_));
  arena_ = ws_ = nullptr;
  dp_host_ = nullptr;
  max_batch_ = max_batch;
  const int64_t B = max_batch, N = cfg_.tokens(), D = cfg_.embed_dim, Hd = cfg_.mlp_hidden;
  const int64_t NH = cfg_.num_heads, P = cfg_.num_patches(), Kc = cfg_.num_classes;
  const int64_t K = int64_t(cfg_.in_chans) * cfg_.patch_size * cfg_.patch_size;
  const int64_t BND = B * N * D, BNH = B * N * Hd, BN = B * N;
  const int64_t es = int64_t(dtype_size(st_));
  // Two passes: count bytes, then carve (256-byte aligned sub-buffers).
  int64_t cursor = 0;
  char* base = nullptr;
  auto take_bytes = [&](int64_t bytes) -> void* {
    void* p = base ? base + cursor : nullptr;
    cursor += round_up(std::max<int64_t>(bytes, 1), 256);
    return p;
  };
  auto act = [&](int64_t n) { return take_bytes(n * es); };
  auto f32 = [&](int64_t n) { return static_cast<float*>(take_bytes(n * 4)); };
  for (int pass = 0; pass < 2; ++pass) {
    cursor = 0;
    // Training keeps every block's activations for the backward; inference needs one set, reused
    // by every block (each block writes its buffers before reading them; its output goes to
    // x_in, which residual_add may overwrite in place).
    acts_.assign(training ? cfg_.depth : 1, BlockActs{});
    for (auto& a : acts_) {
      a.x_in = act(BND);
      a.ln1 = act(BND);
      a.mean1 = f32(BN);
      a.rstd1 = f32(BN);
      a.qkv = act(3 * BND);
      a.lse = f32(B * NH * N);
      a.att = act(BND);
      a.x_mid = act(BND);
      a.ln2 = act(BND);
      a.mean2 = f32(BN);
      a.rstd2 = f32(BN);
      a.r1 = cfg_.is_kat() ? act(BND) : nullptr;
      a.h = act(BNH);
      a.r2 = act(BNH);
    }
    cols_ = act(B * P * K);
    x_final_ = act(BND);
    feat_ = act(BND);
    fmean_ = f32(BN);
    frstd_ = f32(BN);
    cls_ = act(B * D);
    logits_ = act(B * Kc);
    dlogits_ = act(B * Kc);
    tmp_ = act(std::max(BND, B * P * D));
    d_x_ = d_tmp_ = d_ln_ = d_qkv_ = d_att_ = d_h_ = d_r_ = d_cls_ = nullptr;
    if (training) {
      d_x_ = act(BND);
      d_tmp_ = act(BND);
      d_ln_ = act(BND);
      d_qkv_ = act(3 * BND);
      d_att_ = act(BND);
      d_h_ = act(BNH);
      d_r_ = act(BNH);
      d_cls_ = act(B * D);
    }
    row_loss_ = f32(B);
    loss_ = f32(1);
    dp_ = f32(int64_t(cfg_.depth) * 2 * B);
    if (pass == 0) {
      // A plan that cannot fit gets a message naming the sizes and what to change, not a bare
      // "out of memory" from the allocator.
      size_t free_b = 0, total_b = 0;
      KAT_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
      if (size_t(cursor) > free_b) {
        max_batch_ = 0;  // not planned: a later plan() call must start over
        int dev = 0;
        KAT_CUDA_CHECK(cudaGetDevice(&dev));
        throw Error(detail::concat(cfg_.name, " at batch ", B, ": the ", training ? "training" : "inference",
                                   " plan needs ", size_t(cursor) >> 20, " MiB of activations on cuda:", dev,
                                   ", which has ", free_b >> 20, " MiB free of ", total_b >> 20,
                                   " MiB; lower --batch", training ? " (and raise --accum to keep the batch per step)" : "",
                                   " or free the GPU"));
      }
      KAT_CUDA_CHECK(cudaMalloc(&arena_, size_t(cursor)));
      arena_bytes_ = size_t(cursor);
      base = static_cast<char*>(arena_);
    }
  }
  // One workspace, large enough for every reduction of the step (they run one after another).
  size_t ws = cuda::layernorm_backward_workspace_bytes(BN, int(D));
  if (cfg_.is_kat()) {
    const int An = cfg_.shared_numerator ? 1 : cfg_.groups;
    ws = std::max(ws, cuda::grkan_backward_workspace_bytes({BN, int(D), cfg_.groups, An, 5, 4}));
    ws = std::max(ws, cuda::grkan_backward_workspace_bytes({BN, int(Hd), cfg_.groups, An, 5, 4}));
  }
  for (int64_t rows : {BN, B * P, B})
    for (int64_t n : {3 * D, D, Hd, Kc}) ws = std::max(ws, cuda::column_sum_workspace_bytes(rows, n));
  ws = std::max(ws, cuda::attention_backward_workspace_bytes(B, N, NH));
  KAT_CUDA_CHECK(cudaMalloc(&ws_, ws));
  KAT_CUDA_CHECK(cudaMallocHost(&dp_host_, size_t(cfg_.depth) * 2 * B * sizeof(float)));
}

const void* KatModelCuda::features() const { return feat_; }

const void* KatModelCuda::forward(const float* images, int Bi, bool train, Rng* rng) {
  return forward(images, DType::F32, Bi, train, rng);
}

const void* KatModelCuda::forward(const void* images, DType image_storage, int Bi, bool train, Rng* rng) {
  KAT_CHECK(image_storage == DType::F32 || image_storage == st_,
            "KatModelCuda::forward: bf16 images need the bf16 model");
  KAT_CHECK(max_batch_ > 0, "KatModelCuda::forward: call plan(max_batch) first");
  KAT_CHECK(Bi > 0 && Bi <= max_batch_, "KatModelCuda::forward: batch ", Bi, " exceeds the planned maximum ", max_batch_);
  KAT_CHECK(!train || training_plan_, "KatModelCuda::forward: a training forward needs plan(max_batch, training = true)");
  cur_batch_ = Bi;
  const int64_t B = Bi, N = cfg_.tokens(), D = cfg_.embed_dim, Hd = cfg_.mlp_hidden;
  const int64_t NH = cfg_.num_heads, P = cfg_.num_patches(), p = cfg_.patch_size;
  const int64_t K = int64_t(cfg_.in_chans) * p * p, BN = B * N;
  cudaStream_t s = stream_;

  cuda::im2col_patches(B, cfg_.in_chans, cfg_.img_size, cfg_.img_size, p, images, image_storage, st_, cols_, s);
  gemm_->forward(B * P, K, D, st_, cols_, w(off_pew_), p32(off_peb_), tmp_, s, bias_copy(off_peb_));
  void* x0 = acts_.empty() ? x_final_ : acts_[0].x_in;
  cuda::tokens_forward(B, N, D, st_, tmp_, p32(off_cls_), p32(off_pos_), x0, s);

  // Drop-path scales, drawn on the host in the CPU model's order.
  dp_active_ = train && cfg_.drop_path_rate > 0;
  if (dp_active_) {
    KAT_ASSERT(rng != nullptr);
    KAT_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(dp_event_)));
    for (int i = 0; i < cfg_.depth; ++i) {
      const double rate = cfg_.depth > 1 ? cfg_.drop_path_rate * i / (cfg_.depth - 1) : cfg_.drop_path_rate;
      float* da = dp_host_ + (int64_t(i) * 2) * B;
      float* df = da + B;
      for (int64_t b = 0; b < B; ++b) {
        da[b] = df[b] = 1.0f;
        if (rate > 0) {
          const float keep = float(1.0 / (1.0 - rate));
          da[b] = rng->uniform() < rate ? 0.0f : keep;
          df[b] = rng->uniform() < rate ? 0.0f : keep;
        }
      }
    }
    KAT_CUDA_CHECK(cudaMemcpyAsync(dp_, dp_host_, size_t(cfg_.depth) * 2 * B * sizeof(float), cudaMemcpyHostToDevice, s));
    KAT_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(dp_event_), s));
  }

  for (int i = 0; i < cfg_.depth; ++i) {
    const BlockOffsets& o = blk_[i];
    BlockActs& a = block_acts(i);
    void* x_out = (i + 1 < cfg_.depth) ? block_acts(i + 1).x_in : x_final_;
    const float* sa = dp_active_ ? dp_ + int64_t(i) * 2 * B : nullptr;
    const float* sf = dp_active_ ? sa + B : nullptr;
    cuda::layernorm_forward({.rows = BN,
                             .C = int(D),
                             .eps = kLnEps,
                             .dtype = st_,
                             .x = a.x_in,
                             .gamma = p32(o.n1w),
                             .beta = p32(o.n1b),
                             .y = a.ln1,
                             .mean = a.mean1,
                             .rstd = a.rstd1},
                            s);
    gemm_->forward(BN, D, 3 * D, st_, a.ln1, w(o.qkvw), p32(o.qkvb), a.qkv, s, bias_copy(o.qkvb));
    cuda::attention_forward(
        {.B = B, .N = N, .D = D, .H = NH, .dtype = st_, .qkv = a.qkv, .out = a.att, .lse = a.lse}, s);
    gemm_->forward(BN, D, D, st_, a.att, w(o.projw), p32(o.projb), tmp_, s, bias_copy(o.projb));
    cuda::residual_add(B, N * D, st_, a.x_in, tmp_, sa, a.x_mid, s);
    cuda::layernorm_forward({.rows = BN,
                             .C = int(D),
                             .eps = kLnEps,
                             .dtype = st_,
                             .x = a.x_mid,
                             .gamma = p32(o.n2w),
                             .beta = p32(o.n2b),
                             .y = a.ln2,
                             .mean = a.mean2,
                             .rstd = a.rstd2},
                            s);
    if (cfg_.is_kat()) {
      const int An = cfg_.shared_numerator ? 1 : cfg_.groups;
      const ops::GrkanShape s1{BN, int(D), cfg_.groups, An, 5, 4}, s2{BN, int(Hd), cfg_.groups, An, 5, 4};
      cuda::grkan_forward(s1, st_, a.ln2, p32(o.a1n), p32(o.a1d), a.r1, s);
      gemm_->forward(BN, D, Hd, st_, a.r1, w(o.fc1w), p32(o.fc1b), a.h, s, bias_copy(o.fc1b));
      cuda::grkan_forward(s2, st_, a.h, p32(o.a2n), p32(o.a2d), a.r2, s);
    } else {
      gemm_->forward(BN, D, Hd, st_, a.ln2, w(o.fc1w), p32(o.fc1b), a.h, s, bias_copy(o.fc1b));
      cuda::gelu_forward(BN * Hd, st_, a.h, a.r2, s);
    }
    gemm_->forward(BN, Hd, D, st_, a.r2, w(o.fc2w), p32(o.fc2b), tmp_, s, bias_copy(o.fc2b));
    cuda::residual_add(B, N * D, st_, a.x_mid, tmp_, sf, x_out, s);
  }
  cuda::layernorm_forward({.rows = BN,
                           .C = int(D),
                           .eps = kLnEps,
                           .dtype = st_,
                           .x = x_final_,
                           .gamma = p32(off_nw_),
                           .beta = p32(off_nb_),
                           .y = feat_,
                           .mean = fmean_,
                           .rstd = frstd_},
                          s);
  const size_t es = dtype_size(st_);
  KAT_CUDA_CHECK(cudaMemcpy2DAsync(cls_, D * es, feat_, N * D * es, D * es, B, cudaMemcpyDeviceToDevice, s));
  gemm_->forward(B, D, cfg_.num_classes, st_, cls_, w(off_hw_), p32(off_hb_), logits_, s, bias_copy(off_hb_));
  return logits_;
}

void KatModelCuda::zero_grad() {
  KAT_CUDA_CHECK(cudaMemsetAsync(grads_, 0, size_t(dev_total_) * sizeof(float), stream_));
}

void KatModelCuda::poison_activations() {
  KAT_CHECK(arena_ != nullptr, "KatModelCuda::poison_activations: call plan() first");
  KAT_CUDA_CHECK(cudaMemsetAsync(arena_, 0xff, arena_bytes_, stream_));
}

void KatModelCuda::backward(const void* dlogits) {
  KAT_CHECK(cur_batch_ > 0, "KatModelCuda::backward: no forward pass to differentiate");
  KAT_CHECK(training_plan_, "KatModelCuda::backward: the model is planned for inference only");
  const int64_t B = cur_batch_, N = cfg_.tokens(), D = cfg_.embed_dim, Hd = cfg_.mlp_hidden;
  const int64_t NH = cfg_.num_heads, P = cfg_.num_patches(), p = cfg_.patch_size;
  const int64_t K = int64_t(cfg_.in_chans) * p * p, BN = B * N, Kc = cfg_.num_classes;
  const size_t es = dtype_size(st_);
  cudaStream_t s = stream_;

  // Head and final norm: only token 0 receives a gradient from the head.
  gemm_->backward_data(B, D, Kc, st_, dlogits, w(off_hw_), d_cls_, s);
  gemm_->backward_weight(B, D, Kc, st_, dlogits, cls_, g32(off_hw_), s);
  cuda::column_sum_accumulate(B, Kc, st_, dlogits, g32(off_hb_), ws_, s);
  KAT_CUDA_CHECK(cudaMemsetAsync(d_tmp_, 0, size_t(BN * D) * es, s));
  KAT_CUDA_CHECK(cudaMemcpy2DAsync(d_tmp_, N * D * es, d_cls_, D * es, D * es, B, cudaMemcpyDeviceToDevice, s));
  KAT_CUDA_CHECK(cudaMemsetAsync(d_x_, 0, size_t(BN * D) * es, s));
  cuda::layernorm_backward({.rows = BN,
                            .C = int(D),
                            .dtype = st_,
                            .x = x_final_,
                            .gamma = p32(off_nw_),
                            .mean = fmean_,
                            .rstd = frstd_,
                            .dy = d_tmp_,
                            .dx_acc = d_x_,
                            .dgamma = g32(off_nw_),
                            .dbeta = g32(off_nb_),
                            .workspace = ws_},
                           s);

  for (int i = cfg_.depth - 1; i >= 0; --i) {
    const BlockOffsets& o = blk_[i];
    const BlockActs& a = block_acts(i);
    const float* sa = dp_active_ ? dp_ + int64_t(i) * 2 * B : nullptr;
    const float* sf = dp_active_ ? sa + B : nullptr;
    // FFN branch: x_out = x_mid + s * fc2(...)
    const void* dy = d_x_;
    if (sf) {
      cuda::scale_rows(B, N * D, st_, sf, d_x_, d_tmp_, s);
      dy = d_tmp_;
    }
    gemm_->backward_data(BN, Hd, D, st_, dy, w(o.fc2w), d_r_, s);
    gemm_->backward_weight(BN, Hd, D, st_, dy, a.r2, g32(o.fc2w), s);
    cuda::column_sum_accumulate(BN, D, st_, dy, g32(o.fc2b), ws_, s);
    if (cfg_.is_kat()) {
      const int An = cfg_.shared_numerator ? 1 : cfg_.groups;
      const ops::GrkanShape s1{BN, int(D), cfg_.groups, An, 5, 4}, s2{BN, int(Hd), cfg_.groups, An, 5, 4};
      // fc1's bias gradient (the column sums of d_h_) comes out of the GR-KAN reduction.
      cuda::grkan_backward({.shape = s2,
                            .dtype = st_,
                            .x = a.h,
                            .dy = d_r_,
                            .a = p32(o.a2n),
                            .b = p32(o.a2d),
                            .dx = d_h_,
                            .da = g32(o.a2n),
                            .db = g32(o.a2d),
                            .workspace = ws_,
                            .dx_colsum = g32(o.fc1b)},
                           s);
      gemm_->backward_data(BN, D, Hd, st_, d_h_, w(o.fc1w), d_att_, s);
      gemm_->backward_weight(BN, D, Hd, st_, d_h_, a.r1, g32(o.fc1w), s);
      cuda::grkan_backward({.shape = s1,
                            .dtype = st_,
                            .x = a.ln2,
                            .dy = d_att_,
                            .a = p32(o.a1n),
                            .b = p32(o.a1d),
                            .dx = d_ln_,
                            .da = g32(o.a1n),
                            .db = g32(o.a1d),
                            .workspace = ws_},
                           s);
    } else {
      cuda::gelu_backward(BN * Hd, st_, a.h, d_r_, d_h_, s);
      gemm_->backward_data(BN, D, Hd, st_, d_h_, w(o.fc1w), d_ln_, s);
      gemm_->backward_weight(BN, D, Hd, st_, d_h_, a.ln2, g32(o.fc1w), s);
      cuda::column_sum_accumulate(BN, Hd, st_, d_h_, g32(o.fc1b), ws_, s);
    }
    cuda::layernorm_backward({.rows = BN,
                              .C = int(D),
                              .dtype = st_,
                              .x = a.x_mid,
                              .gamma = p32(o.n2w),
                              .mean = a.mean2,
                              .rstd = a.rstd2,
                              .dy = d_ln_,
                              .dx_acc = d_x_,
                              .dgamma = g32(o.n2w),
                              .dbeta = g32(o.n2b),
                              .workspace = ws_},
                             s);
    // Attention branch: x_mid = x_in + s * proj(att)
    dy = d_x_;
    if (sa) {
      cuda::scale_rows(B, N * D, st_, sa, d_x_, d_tmp_, s);
      dy = d_tmp_;
    }
    gemm_->backward_data(BN, D, D, st_, dy, w(o.projw), d_att_, s);
    gemm_->backward_weight(BN, D, D, st_, dy, a.att, g32(o.projw), s);
    cuda::column_sum_accumulate(BN, D, st_, dy, g32(o.projb), ws_, s);
    cuda::attention_backward({.B = B,
                              .N = N,
                              .D = D,
                              .H = NH,
                              .dtype = st_,
                              .qkv = a.qkv,
                              .out = a.att,
                              .lse = a.lse,
                              .dout = d_att_,
                              .dqkv = d_qkv_,
                              .workspace = ws_},
                             s);
    gemm_->backward_data(BN, D, 3 * D, st_, d_qkv_, w(o.qkvw), d_ln_, s);
    gemm_->backward_weight(BN, D, 3 * D, st_, d_qkv_, a.ln1, g32(o.qkvw), s);
    cuda::column_sum_accumulate(BN, 3 * D, st_, d_qkv_, g32(o.qkvb), ws_, s);
    cuda::layernorm_backward({.rows = BN,
                              .C = int(D),
                              .dtype = st_,
                              .x = a.x_in,
                              .gamma = p32(o.n1w),
                              .mean = a.mean1,
                              .rstd = a.rstd1,
                              .dy = d_ln_,
                              .dx_acc = d_x_,
                              .dgamma = g32(o.n1w),
                              .dbeta = g32(o.n1b),
                              .workspace = ws_},
                             s);
  }

  // Embedding: d_x_ = dL/d tokens.
  cuda::tokens_backward(B, N, D, st_, d_x_, g32(off_cls_), g32(off_pos_), tmp_, s);
  gemm_->backward_weight(B * P, K, D, st_, tmp_, cols_, g32(off_pew_), s);
  cuda::column_sum_accumulate(B * P, D, st_, tmp_, g32(off_peb_), ws_, s);
}

void KatModelCuda::loss_forward_backward(const float* targets, float label_smoothing) {
  KAT_CHECK(cur_batch_ > 0, "KatModelCuda::loss_forward_backward: no forward pass");
  cuda::softmax_xent({.B = cur_batch_,
                      .K = cfg_.num_classes,
                      .dtype = st_,
                      .logits = logits_,
                      .target = targets,
                      .label_smoothing = label_smoothing,
                      .dlogits = dlogits_,
                      .row_loss = row_loss_,
                      .loss = loss_},
                     stream_);
}

float KatModelCuda::loss_value() const {
  float v = 0.f;
  KAT_CUDA_CHECK(cudaMemcpyAsync(&v, loss_, sizeof(float), cudaMemcpyDeviceToHost, stream_));
  KAT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return v;
}

void KatModelCuda::train_step(const float* images, const float* targets, int B, double lr,
                              float label_smoothing, Rng* rng) {
  zero_grad();
  forward(images, B, true, rng);
  loss_forward_backward(targets, label_smoothing);
  backward(dlogits_);
  adamw_step(lr);
}

}  // namespace kat
#endif  // KAT_HAVE_CUDA
