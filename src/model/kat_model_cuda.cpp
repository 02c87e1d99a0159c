// KatModelCuda (see kat_model_cuda.h): host code enqueuing the kernels of src/ops/cuda. Compiled
// into katlib only when the CUDA backend is on (KAT_HAVE_CUDA); an empty unit otherwise.
#ifdef KAT_HAVE_CUDA
#include "model/kat_model_cuda.h"
#include "model/kat_model_cuda_fp8.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "kat/core/error.h"
#include "kat/model/drop_path.h"
#include "ops/cuda/attention.h"
#include "ops/cuda/attention_cudnn.h"
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
int64_t round_up(int64_t n, int64_t a) { return (n + a - 1) / a * a; }
}  // namespace

KatModelCuda::KatModelCuda(const ModelConfig& cfg, DType dtype, cudaStream_t stream)
    : cfg_(cfg), dtype_(dtype), stream_(stream), layout_((cfg_.validate(), cfg_), ModelLayout::kCudaAlign) {
  cuda::attention_check_shape(cfg.tokens(), cfg.embed_dim, cfg.num_heads);
  gemm_ = std::make_unique<cuda::Gemm>();
  const size_t n = size_t(layout_.total());
  params_.allocate(n);
  grads_.allocate(n);
  params_.zero();
  grads_.zero();
  if (dtype_ == DType::BF16) {
    wbf16_.allocate(n);
    wbf16_.zero();
  }
  dp_event_ = cuda::CudaEvent::create(cudaEventDisableTiming);
}

// One captured inference forward, instantiated.
struct KatModelCuda::Graph {
  cudaGraphExec_t exec = nullptr;
  ~Graph() {
    if (exec) cudaGraphExecDestroy(exec);
  }
};

KatModelCuda::~KatModelCuda() {
  cudaStreamSynchronize(stream_);  // nothing enqueued may still use the buffers freed below
}

void KatModelCuda::set_cuda_graphs(bool on) {
  KAT_CHECK(!on || stream_ != nullptr,
            "KatModelCuda: CUDA graphs need a stream of the model's own (the legacy default stream cannot be "
            "captured)");
  if (!on) drop_graphs();
  graphs_on_ = on;
}

void KatModelCuda::drop_graphs() {
  if (graphs_.empty()) return;
  KAT_CUDA_CHECK(cudaStreamSynchronize(stream_));  // a replay in flight may still run
  graphs_.clear();
}

const void* KatModelCuda::forward_graphed(const void* images, DType image_dtype, int B) {
  const GraphKey key{images, image_dtype, B};
  for (auto& [k, g] : graphs_) {
    if (!(k == key)) continue;
    cur_batch_ = B;
    dp_active_ = false;
    if (fp8_) fp8_->train_pass = false;  // what the captured eval forward set (a backward now: current scales)
    KAT_CUDA_CHECK(cudaGraphLaunch(g->exec, stream_));
    ++graph_replays_;
    return acts_.logits;
  }
  // New shape: run it eagerly (its result is this call's; it also does what capture may not: the
  // kernels' shared-memory attributes, cuBLASLt's heuristics), then capture the same calls.
  const void* out = forward_eager(images, image_dtype, B, false, nullptr);
  if (int(graphs_.size()) >= kMaxGraphs) return out;
  cudaGraph_t graph = nullptr;
  auto g = std::make_unique<Graph>();
  try {
    KAT_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      forward_eager(images, image_dtype, B, false, nullptr);
    } catch (...) {
      cudaStreamEndCapture(stream_, &graph);
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    KAT_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    const cudaError_t inst = cudaGraphInstantiate(&g->exec, graph, 0);
    cudaGraphDestroy(graph);
    KAT_CUDA_CHECK(inst);
  } catch (const std::exception& e) {
    (void)cudaGetLastError();  // (capture errors are not sticky)
    std::fprintf(stderr, "kat: CUDA graphs off: capturing the inference forward (batch %d) failed: %s\n", B,
                 e.what());
    graphs_on_ = false;
    return out;
  }
  graphs_.emplace_back(key, std::move(g));
  return out;
}

void KatModelCuda::upload_padded(const float* host, float* dev) const {
  std::vector<float> buf(size_t(layout_.total()));
  layout_.pack(host, buf.data());
  KAT_CUDA_CHECK(cudaMemcpyAsync(dev, buf.data(), buf.size() * sizeof(float), cudaMemcpyHostToDevice, stream_));
  KAT_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void KatModelCuda::download_padded(const float* dev, float* host) const {
  std::vector<float> buf(size_t(layout_.total()));
  KAT_CUDA_CHECK(cudaMemcpyAsync(buf.data(), dev, buf.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  KAT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  layout_.unpack(buf.data(), host);
}

void KatModelCuda::refresh_working_weights() {
  if (wbf16_) cuda::convert_f32_to_bf16(layout_.total(), params_.data(), wbf16_.data(), stream_);
  refresh_fp8_weights();
}

void KatModelCuda::upload_params(const float* host) {
  upload_padded(host, params_.data());
  refresh_working_weights();
  KAT_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void KatModelCuda::exchange_params(cuda::DeviceBuffer<float>& other) {
  KAT_CHECK(other.size() == params_.size(), "KatModelCuda::exchange_params: ", other.size(),
            " floats given, the model holds ", params_.size());
  drop_graphs();  // they hold the old buffer's pointers
  std::swap(params_, other);
  refresh_working_weights();
}

void KatModelCuda::download_params(float* host) const { download_padded(params_.data(), host); }
void KatModelCuda::download_grads(float* host) const { download_padded(grads_.data(), host); }

void KatModelCuda::divide_dlogits(float divisor) {
  KAT_CHECK(cur_batch_ > 0, "KatModelCuda::divide_dlogits: no forward pass");
  cuda::divide_inplace(int64_t(cur_batch_) * cfg_.num_classes, dtype_, acts_.dlogits, divisor, stream_);
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
  download_storage(acts_.logits, int64_t(cur_batch_) * cfg_.num_classes, dtype_, host, stream_);
}

void KatModelCuda::download_features(float* host) const {
  download_storage(acts_.feat, int64_t(cur_batch_) * cfg_.tokens() * cfg_.embed_dim, dtype_, host, stream_);
}

// The bias operand of the GEMM epilogue in bf16 mode (its bf16 working copy; see ops/cuda/gemm.h), or
// null in fp32 mode, where the fp32 bias is added by the separate bias kernel.
const void* KatModelCuda::bias_copy(int64_t off) const { return wbf16_ ? w(off) : nullptr; }

const void* KatModelCuda::w(int64_t off) const {
  if (wbf16_) return wbf16_.data() + off;
  return params_.data() + off;
}

void KatModelCuda::plan(int max_batch, bool training) {
  KAT_CHECK(max_batch > 0, "batch size must be > 0, got ", max_batch);
  if (max_batch == max_batch_ && training == training_plan_) return;
  training_plan_ = training;
  KAT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  graphs_.clear();  // they hold pointers into the arena
  arena_.release();
  ws_.release();
  dp_host_.release();
  fp8_release_activations();  // the old plan's FP8 codes are not counted as taken below
  max_batch_ = 0;             // not planned until every buffer below is taken: a later plan() starts over
  const int64_t B = max_batch, N = cfg_.tokens(), D = cfg_.embed_dim, Hd = cfg_.mlp_hidden;
  const int64_t NH = cfg_.num_heads, P = cfg_.num_patches(), Kc = cfg_.num_classes;
  const int64_t BN = B * N;
  const int64_t es = int64_t(dtype_size(dtype_));
  // Two passes: count bytes, then carve (256-byte aligned sub-buffers).
  int64_t cursor = 0;
  char* base = nullptr;
  auto take = [&](const char*, std::initializer_list<int64_t> shape, bool fp32) -> void* {
    void* p = base ? base + cursor : nullptr;
    cursor += round_up(std::max<int64_t>(shape_numel(shape) * (fp32 ? 4 : es), 1), 256);
    return p;
  };
  // Training keeps every block's activations for the backward; inference needs one set, reused
  // by every block (each block writes its buffers before reading them; its output goes to
  // x_in, which residual_add may overwrite in place).
  const ActivationPlanOptions opts{training, SoftmaxSaved::LogSumExp, /*device_loss=*/true};
  for (int pass = 0; pass < 2; ++pass) {
    cursor = 0;
    plan_activations(cfg_, B, opts, acts_, take);
    if (pass == 0) {
      // A plan that cannot fit gets a message naming the sizes and what to change, not a bare
      // "out of memory" from the allocator.
      size_t free_b = 0, total_b = 0;
      KAT_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
      const size_t fp8_b = size_t(fp8_plan_bytes(B, training));  // allocated by fp8_plan below
      if (size_t(cursor) + fp8_b > free_b) {
        int dev = 0;
        KAT_CUDA_CHECK(cudaGetDevice(&dev));
        throw Error(detail::concat(
            cfg_.name, " at batch ", B, ": the ", training ? "training" : "inference", " plan needs ",
            (size_t(cursor) + fp8_b) >> 20, " MiB of activations",
            fp8_b > 0 ? detail::concat(" (", fp8_b >> 20, " MiB of them FP8 codes)") : std::string(),
            " on cuda:", dev, ", which has ", free_b >> 20, " MiB free of ", total_b >> 20, " MiB; lower --batch",
            training ? " (and raise --accum to keep the batch per step)" : "", " or free the GPU"));
      }
      arena_.allocate(size_t(cursor));
      base = arena_.data();
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
  ws = std::max(ws, cuda::attention_backward_workspace_bytes(B, N, NH));  // ours: also the fallback
  attention_ = choose_attention(B, training);
  if (attention_ == ops::AttentionBackend::Cudnn)
    ws = std::max(ws, cuda::cudnn_attention_workspace_bytes(B, N, D, NH, dtype_, training));
  ws_.allocate(ws);
  dp_host_.allocate(size_t(drop_path_scale_count(cfg_, B)));
  if (fp8_) fp8_plan(B, training);
  max_batch_ = max_batch;
}

ops::AttentionBackend KatModelCuda::choose_attention(int64_t B, bool training) const {
  const ops::AttentionBackend asked = ops::requested_attention_backend();
  if (asked == ops::AttentionBackend::Ours) return ops::AttentionBackend::Ours;
  std::string why;
  if (cuda::cudnn_attention_available(&why) &&
      cuda::cudnn_attention_supported(B, cfg_.tokens(), cfg_.embed_dim, cfg_.num_heads, dtype_, training, &why)) {
    cuda::cudnn_attention_note("kat: attention through " + cuda::cudnn_attention_version());
    return ops::AttentionBackend::Cudnn;
  }
  // auto: ours where cuDNN cannot run, quietly (a build without cuDNN, fp32 storage); asked: say why.
  if (asked == ops::AttentionBackend::Cudnn)
    cuda::cudnn_attention_note("kat: cuDNN attention not used for " + cfg_.name + ": " + why + "; running ours");
  return ops::AttentionBackend::Ours;
}

// The planned implementation; ours for a call cuDNN refuses (a smaller batch it has no kernel for).
void KatModelCuda::attention_forward(const cuda::AttentionForwardArgs& a) {
  std::string why;
  if (attention_ == ops::AttentionBackend::Cudnn) {
    if (cuda::cudnn_attention_forward(a, ws_.data(), ws_.size(), stream_, &why)) return;
    cuda::cudnn_attention_note(
        detail::concat("kat: cuDNN attention forward at batch ", a.B, ": ", why, "; ours for this batch size"));
  }
  cuda::attention_forward(a, stream_);
}

void KatModelCuda::attention_backward(const cuda::AttentionBackwardArgs& a) {
  std::string why;
  if (attention_ == ops::AttentionBackend::Cudnn) {
    if (cuda::cudnn_attention_backward(a, ws_.size(), stream_, &why)) return;
    cuda::cudnn_attention_note(
        detail::concat("kat: cuDNN attention backward at batch ", a.B, ": ", why, "; ours for this batch size"));
  }
  cuda::attention_backward(a, stream_);
}

const void* KatModelCuda::features() const { return acts_.feat; }

const void* KatModelCuda::forward(const float* images, int Bi, bool train, Rng* rng) {
  return forward(images, DType::F32, Bi, train, rng);
}

const void* KatModelCuda::forward(const void* images, DType image_dtype, int Bi, bool train, Rng* rng) {
  // Checked once here for both paths (a replay runs no forward_eager).
  KAT_CHECK(image_dtype == DType::F32 || image_dtype == dtype_,
            "KatModelCuda::forward: bf16 images need the bf16 model");
  KAT_CHECK(max_batch_ > 0, "KatModelCuda::forward: call plan(max_batch) first");
  KAT_CHECK(Bi > 0 && Bi <= max_batch_, "KatModelCuda::forward: batch ", Bi, " exceeds the planned maximum ",
            max_batch_);
  KAT_CHECK(!train || training_plan_,
            "KatModelCuda::forward: a training forward needs plan(max_batch, training = true)");
  if (graphs_on_ && !train) return forward_graphed(images, image_dtype, Bi);
  return forward_eager(images, image_dtype, Bi, train, rng);
}

const void* KatModelCuda::forward_eager(const void* images, DType image_dtype, int Bi, bool train, Rng* rng) {
  cur_batch_ = Bi;
  const int64_t B = Bi, N = cfg_.tokens(), D = cfg_.embed_dim, Hd = cfg_.mlp_hidden;
  const int64_t NH = cfg_.num_heads, P = cfg_.num_patches(), p = cfg_.patch_size;
  const int64_t K = int64_t(cfg_.in_chans) * p * p, BN = B * N;
  cudaStream_t s = stream_;
  const ModelLayout& L = layout_;

  cuda::im2col_patches({.B = B,
                        .C = cfg_.in_chans,
                        .H = cfg_.img_size,
                        .W = cfg_.img_size,
                        .patch = p,
                        .img = images,
                        .img_dtype = image_dtype,
                        .dtype = dtype_,
                        .cols = acts_.cols},
                       s);
  gemm_->forward(B * P, K, D, dtype_, acts_.cols, w(L.patch_w), p32(L.patch_b), acts_.tmp, s,
                 bias_copy(L.patch_b));
  void* x0 = acts_.blocks.empty() ? acts_.x_final : acts_.blocks[0].x_in;
  cuda::tokens_forward({.B = B,
                        .N = N,
                        .D = D,
                        .dtype = dtype_,
                        .patches = acts_.tmp,
                        .cls = p32(L.cls_token),
                        .pos = p32(L.pos_embed),
                        .x = x0},
                       s);

  // Drop-path scales (depth, 2, B), drawn on the host by the CPU model's draw_drop_path.
  dp_active_ = drop_path_active(cfg_, train);
  if (dp_active_) {
    KAT_CHECK(rng != nullptr, "KatModelCuda::forward: a training forward with drop-path needs an Rng");
    dp_event_.synchronize();  // the previous upload has left dp_host_
    draw_drop_path(cfg_, B, *rng, dp_host_.data());
    KAT_CUDA_CHECK(cudaMemcpyAsync(acts_.drop_path, dp_host_.data(),
                                   size_t(drop_path_scale_count(cfg_, B)) * sizeof(float), cudaMemcpyHostToDevice,
                                   s));
    dp_event_.record(s);
  }

  // FP8: the block linears below quantise their inputs (fp8_linear_forward); the patch embedding
  // above and the head stay bf16 (ops/fp8.h).
  if (fp8_) fp8_begin_forward(train);
  for (int i = 0; i < cfg_.depth; ++i) {
    const BlockParams& o = L.blocks[i];
    BlockActs& a = block_acts(i);
    void* x_out = (i + 1 < cfg_.depth) ? block_acts(i + 1).x_in : acts_.x_final;
    const float* sa = dp_active_ ? acts_.drop_path + int64_t(i) * 2 * B : nullptr;
    const float* sf = dp_active_ ? sa + B : nullptr;
    cuda::layernorm_forward({.rows = BN,
                             .C = int(D),
                             .eps = kLnEps,
                             .dtype = dtype_,
                             .x = a.x_in,
                             .gamma = p32(o.n1w),
                             .beta = p32(o.n1b),
                             .y = a.ln1,
                             .mean = a.mean1,
                             .rstd = a.rstd1},
                            s);
    if (fp8_)
      fp8_linear_forward(i, 0, BN, D, 3 * D, a.ln1, o.qkvb, a.qkv);
    else
      gemm_->forward(BN, D, 3 * D, dtype_, a.ln1, w(o.qkvw), p32(o.qkvb), a.qkv, s, bias_copy(o.qkvb));
    attention_forward(
        {.B = B, .N = N, .D = D, .H = NH, .dtype = dtype_, .qkv = a.qkv, .out = a.att, .lse = a.softmax});
    if (fp8_)
      fp8_linear_forward(i, 1, BN, D, D, a.att, o.projb, acts_.tmp);
    else
      gemm_->forward(BN, D, D, dtype_, a.att, w(o.projw), p32(o.projb), acts_.tmp, s, bias_copy(o.projb));
    cuda::residual_add(B, N * D, dtype_, a.x_in, acts_.tmp, sa, a.x_mid, s);
    cuda::layernorm_forward({.rows = BN,
                             .C = int(D),
                             .eps = kLnEps,
                             .dtype = dtype_,
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
      cuda::grkan_forward(s1, dtype_, a.ln2, p32(o.a1n), p32(o.a1d), a.r1, s);
      if (fp8_)
        fp8_linear_forward(i, 2, BN, D, Hd, a.r1, o.fc1b, a.h);
      else
        gemm_->forward(BN, D, Hd, dtype_, a.r1, w(o.fc1w), p32(o.fc1b), a.h, s, bias_copy(o.fc1b));
      cuda::grkan_forward(s2, dtype_, a.h, p32(o.a2n), p32(o.a2d), a.r2, s);
    } else {
      if (fp8_)
        fp8_linear_forward(i, 2, BN, D, Hd, a.ln2, o.fc1b, a.h);
      else
        gemm_->forward(BN, D, Hd, dtype_, a.ln2, w(o.fc1w), p32(o.fc1b), a.h, s, bias_copy(o.fc1b));
      cuda::gelu_forward(BN * Hd, dtype_, a.h, a.r2, s);
    }
    if (fp8_)
      fp8_linear_forward(i, 3, BN, Hd, D, a.r2, o.fc2b, acts_.tmp);
    else
      gemm_->forward(BN, Hd, D, dtype_, a.r2, w(o.fc2w), p32(o.fc2b), acts_.tmp, s, bias_copy(o.fc2b));
    cuda::residual_add(B, N * D, dtype_, a.x_mid, acts_.tmp, sf, x_out, s);
  }
  if (fp8_) fp8_end_forward();
  cuda::layernorm_forward({.rows = BN,
                           .C = int(D),
                           .eps = kLnEps,
                           .dtype = dtype_,
                           .x = acts_.x_final,
                           .gamma = p32(L.norm_w),
                           .beta = p32(L.norm_b),
                           .y = acts_.feat,
                           .mean = acts_.fmean,
                           .rstd = acts_.frstd},
                          s);
  const size_t es = dtype_size(dtype_);
  KAT_CUDA_CHECK(
      cudaMemcpy2DAsync(acts_.cls, D * es, acts_.feat, N * D * es, D * es, B, cudaMemcpyDeviceToDevice, s));
  gemm_->forward(B, D, cfg_.num_classes, dtype_, acts_.cls, w(L.head_w), p32(L.head_b), acts_.logits, s,
                 bias_copy(L.head_b));
  return acts_.logits;
}

void KatModelCuda::zero_grad() { grads_.zero_async(stream_); }

void KatModelCuda::poison_activations() {
  KAT_CHECK(arena_, "KatModelCuda::poison_activations: call plan() first");
  KAT_CUDA_CHECK(cudaMemsetAsync(arena_.data(), 0xff, arena_.bytes(), stream_));
}

void KatModelCuda::backward(const void* dlogits) {
  KAT_CHECK(cur_batch_ > 0, "KatModelCuda::backward: no forward pass to differentiate");
  KAT_CHECK(training_plan_, "KatModelCuda::backward: the model is planned for inference only");
  const int64_t B = cur_batch_, N = cfg_.tokens(), D = cfg_.embed_dim, Hd = cfg_.mlp_hidden;
  const int64_t NH = cfg_.num_heads, P = cfg_.num_patches(), p = cfg_.patch_size;
  const int64_t K = int64_t(cfg_.in_chans) * p * p, BN = B * N, Kc = cfg_.num_classes;
  const size_t es = dtype_size(dtype_);
  cudaStream_t s = stream_;
  const ModelLayout& L = layout_;

  // Head and final norm: only token 0 receives a gradient from the head.
  gemm_->backward_data(B, D, Kc, dtype_, dlogits, w(L.head_w), acts_.d_cls, s);
  gemm_->backward_weight(B, D, Kc, dtype_, dlogits, acts_.cls, g32(L.head_w), s);
  cuda::column_sum_accumulate(B, Kc, dtype_, dlogits, g32(L.head_b), ws_.data(), s);
  KAT_CUDA_CHECK(cudaMemsetAsync(acts_.d_tmp, 0, size_t(BN * D) * es, s));
  KAT_CUDA_CHECK(
      cudaMemcpy2DAsync(acts_.d_tmp, N * D * es, acts_.d_cls, D * es, D * es, B, cudaMemcpyDeviceToDevice, s));
  KAT_CUDA_CHECK(cudaMemsetAsync(acts_.d_x, 0, size_t(BN * D) * es, s));
  cuda::layernorm_backward({.rows = BN,
                            .C = int(D),
                            .dtype = dtype_,
                            .x = acts_.x_final,
                            .gamma = p32(L.norm_w),
                            .mean = acts_.fmean,
                            .rstd = acts_.frstd,
                            .dy = acts_.d_tmp,
                            .dx_acc = acts_.d_x,
                            .dgamma = g32(L.norm_w),
                            .dbeta = g32(L.norm_b),
                            .workspace = ws_.data()},
                           s);

  // FP8: the block linears' data and weight gradients through E5M2 dy (fp8_linear_backward); their
  // bias gradients stay the column sums over the bf16 dy.
  if (fp8_) fp8_begin_backward();
  for (int i = cfg_.depth - 1; i >= 0; --i) {
    const BlockParams& o = L.blocks[i];
    const BlockActs& a = block_acts(i);
    const float* sa = dp_active_ ? acts_.drop_path + int64_t(i) * 2 * B : nullptr;
    const float* sf = dp_active_ ? sa + B : nullptr;
    // FFN branch: x_out = x_mid + s * fc2(...)
    const void* dy = acts_.d_x;
    if (sf) {
      cuda::scale_rows(B, N * D, dtype_, sf, acts_.d_x, acts_.d_tmp, s);
      dy = acts_.d_tmp;
    }
    if (fp8_) {
      fp8_linear_backward(i, 3, BN, Hd, D, dy, acts_.d_r, o.fc2w);
    } else {
      gemm_->backward_data(BN, Hd, D, dtype_, dy, w(o.fc2w), acts_.d_r, s);
      gemm_->backward_weight(BN, Hd, D, dtype_, dy, a.r2, g32(o.fc2w), s);
    }
    cuda::column_sum_accumulate(BN, D, dtype_, dy, g32(o.fc2b), ws_.data(), s);
    if (cfg_.is_kat()) {
      const int An = cfg_.shared_numerator ? 1 : cfg_.groups;
      const ops::GrkanShape s1{BN, int(D), cfg_.groups, An, 5, 4}, s2{BN, int(Hd), cfg_.groups, An, 5, 4};
      // fc1's bias gradient (the column sums of acts_.d_h) comes out of the GR-KAN reduction.
      cuda::grkan_backward({.shape = s2,
                            .dtype = dtype_,
                            .x = a.h,
                            .dy = acts_.d_r,
                            .a = p32(o.a2n),
                            .b = p32(o.a2d),
                            .dx = acts_.d_h,
                            .da = g32(o.a2n),
                            .db = g32(o.a2d),
                            .workspace = ws_.data(),
                            .dx_colsum = g32(o.fc1b)},
                           s);
      if (fp8_) {
        fp8_linear_backward(i, 2, BN, D, Hd, acts_.d_h, acts_.d_att, o.fc1w);
      } else {
        gemm_->backward_data(BN, D, Hd, dtype_, acts_.d_h, w(o.fc1w), acts_.d_att, s);
        gemm_->backward_weight(BN, D, Hd, dtype_, acts_.d_h, a.r1, g32(o.fc1w), s);
      }
      cuda::grkan_backward({.shape = s1,
                            .dtype = dtype_,
                            .x = a.ln2,
                            .dy = acts_.d_att,
                            .a = p32(o.a1n),
                            .b = p32(o.a1d),
                            .dx = acts_.d_ln,
                            .da = g32(o.a1n),
                            .db = g32(o.a1d),
                            .workspace = ws_.data()},
                           s);
    } else {
      cuda::gelu_backward(BN * Hd, dtype_, a.h, acts_.d_r, acts_.d_h, s);
      if (fp8_) {
        fp8_linear_backward(i, 2, BN, D, Hd, acts_.d_h, acts_.d_ln, o.fc1w);
      } else {
        gemm_->backward_data(BN, D, Hd, dtype_, acts_.d_h, w(o.fc1w), acts_.d_ln, s);
        gemm_->backward_weight(BN, D, Hd, dtype_, acts_.d_h, a.ln2, g32(o.fc1w), s);
      }
      cuda::column_sum_accumulate(BN, Hd, dtype_, acts_.d_h, g32(o.fc1b), ws_.data(), s);
    }
    cuda::layernorm_backward({.rows = BN,
                              .C = int(D),
                              .dtype = dtype_,
                              .x = a.x_mid,
                              .gamma = p32(o.n2w),
                              .mean = a.mean2,
                              .rstd = a.rstd2,
                              .dy = acts_.d_ln,
                              .dx_acc = acts_.d_x,
                              .dgamma = g32(o.n2w),
                              .dbeta = g32(o.n2b),
                              .workspace = ws_.data()},
                             s);
    // Attention branch: x_mid = x_in + s * proj(att)
    dy = acts_.d_x;
    if (sa) {
      cuda::scale_rows(B, N * D, dtype_, sa, acts_.d_x, acts_.d_tmp, s);
      dy = acts_.d_tmp;
    }
    if (fp8_) {
      fp8_linear_backward(i, 1, BN, D, D, dy, acts_.d_att, o.projw);
    } else {
      gemm_->backward_data(BN, D, D, dtype_, dy, w(o.projw), acts_.d_att, s);
      gemm_->backward_weight(BN, D, D, dtype_, dy, a.att, g32(o.projw), s);
    }
    cuda::column_sum_accumulate(BN, D, dtype_, dy, g32(o.projb), ws_.data(), s);
    attention_backward({.B = B,
                        .N = N,
                        .D = D,
                        .H = NH,
                        .dtype = dtype_,
                        .qkv = a.qkv,
                        .out = a.att,
                        .lse = a.softmax,
                        .dout = acts_.d_att,
                        .dqkv = acts_.d_qkv,
                        .workspace = ws_.data()});
    if (fp8_) {
      fp8_linear_backward(i, 0, BN, D, 3 * D, acts_.d_qkv, acts_.d_ln, o.qkvw);
    } else {
      gemm_->backward_data(BN, D, 3 * D, dtype_, acts_.d_qkv, w(o.qkvw), acts_.d_ln, s);
      gemm_->backward_weight(BN, D, 3 * D, dtype_, acts_.d_qkv, a.ln1, g32(o.qkvw), s);
    }
    cuda::column_sum_accumulate(BN, 3 * D, dtype_, acts_.d_qkv, g32(o.qkvb), ws_.data(), s);
    cuda::layernorm_backward({.rows = BN,
                              .C = int(D),
                              .dtype = dtype_,
                              .x = a.x_in,
                              .gamma = p32(o.n1w),
                              .mean = a.mean1,
                              .rstd = a.rstd1,
                              .dy = acts_.d_ln,
                              .dx_acc = acts_.d_x,
                              .dgamma = g32(o.n1w),
                              .dbeta = g32(o.n1b),
                              .workspace = ws_.data()},
                             s);
  }

  if (fp8_) fp8_end_backward();

  // Embedding: d_x = dL/d tokens.
  cuda::tokens_backward({.B = B,
                         .N = N,
                         .D = D,
                         .dtype = dtype_,
                         .dx = acts_.d_x,
                         .dcls = g32(L.cls_token),
                         .dpos = g32(L.pos_embed),
                         .dpatches = acts_.tmp},
                        s);
  gemm_->backward_weight(B * P, K, D, dtype_, acts_.tmp, acts_.cols, g32(L.patch_w), s);
  cuda::column_sum_accumulate(B * P, D, dtype_, acts_.tmp, g32(L.patch_b), ws_.data(), s);
}

void KatModelCuda::loss_forward_backward(const float* targets, float label_smoothing) {
  KAT_CHECK(cur_batch_ > 0, "KatModelCuda::loss_forward_backward: no forward pass");
  cuda::softmax_xent({.B = cur_batch_,
                      .K = cfg_.num_classes,
                      .dtype = dtype_,
                      .logits = acts_.logits,
                      .target = targets,
                      .label_smoothing = label_smoothing,
                      .dlogits = acts_.dlogits,
                      .row_loss = acts_.row_loss,
                      .loss = acts_.loss},
                     stream_);
}

float KatModelCuda::loss_value() const {
  float v = 0.f;
  KAT_CUDA_CHECK(cudaMemcpyAsync(&v, acts_.loss, sizeof(float), cudaMemcpyDeviceToHost, stream_));
  KAT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return v;
}

}  // namespace kat
#endif  // KAT_HAVE_CUDA
