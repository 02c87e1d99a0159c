// KatModelCuda's FP8 linear layers (--precision fp8 on the GPU): enabling them, the amax history on
// the device, the weights' quantisation and one block linear forward / backward through the FP8
// casts (ops/cuda/fp8.h) and GEMMs (ops/cuda/gemm_fp8.h), per the recipe of ops/fp8.h (the CPU
// emulation of the same recipe: model/kat_model_fp8.cpp). State: kat_model_cuda_fp8.h.
//
// Where the host differs from the CPU emulation, and why the result is the same recipe:
//  - The CPU records a slot's amax when it quantises the tensor; here the casts write the amaxes
//    into `amax` and one fp8_amax_record per pass appends them (x slots at the end of a training
//    forward, dy slots at the end of its backward). A slot's scale only reads its own ring, and no
//    ring is read between its cast and the record, so the scales and the rings are the CPU's.
//  - Delayed scales are computed for all x (dy) slots by one kernel at the start of the forward
//    (backward) when every x (dy) slot has a history (the host keeps a mirror of the seen counts);
//    otherwise (the first pass, history 0, eval, a history restored with gaps) each tensor gets its
//    amax first, then its scale (from its history where it has one), then its cast.
#ifdef KAT_HAVE_CUDA
#include "model/kat_model_cuda_fp8.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <iterator>
#include <string>

#include "kat/core/error.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/fp8.h"

namespace kat {

namespace {
// The four block linears' (in, out), lin = 0 qkv, 1 proj, 2 fc1, 3 fc2.
void linear_shapes(const ModelConfig& c, int64_t in[4], int64_t out[4]) {
  const int64_t D = c.embed_dim, Hd = c.mlp_hidden;
  in[0] = D, out[0] = 3 * D;
  in[1] = D, out[1] = D;
  in[2] = D, out[2] = Hd;
  in[3] = Hd, out[3] = D;
}
int64_t weight_offset(const BlockParams& o, int lin) {
  const int64_t w[4] = {o.qkvw, o.projw, o.fc1w, o.fc2w};
  return w[lin];
}
}  // namespace

void KatModelCuda::enable_fp8() {
  const ops::Fp8Recipe r;
  enable_fp8(r.history, r.margin);
}

void KatModelCuda::enable_fp8(int history, int margin) {
  KAT_CHECK(history >= 0, "FP8: the amax history length must be >= 0 (0: current scaling), got ", history);
  KAT_CHECK(dtype_ == DType::BF16, "FP8 (--precision fp8) runs on the bf16 model (its GEMMs write bf16); this ",
            cfg_.name, " was built with fp32 activations");
  KAT_CHECK(fp8_ == nullptr, "KatModelCuda::enable_fp8: FP8 is already enabled");
  int64_t in[4], out[4];
  linear_shapes(cfg_, in, out);
  const char* names[4] = {"qkv", "proj", "fc1", "fc2"};
  for (int l = 0; l < 4; ++l) {
    const std::string why = cuda::gemm_fp8_unsupported(1, in[l], out[l]);
    KAT_CHECK(why.empty(), "FP8 (--precision fp8): ", cfg_.name, "'s ", names[l], " (", in[l], " -> ", out[l],
              ") cannot run as an FP8 GEMM: ", why);
  }
  auto f = std::make_unique<Fp8>();
  f->recipe.history = history;
  f->recipe.margin = margin;
  // Throws kat::Error on a GPU without FP8 tensor cores (compute capability < 8.9), naming it.
  f->gemm = std::make_unique<cuda::GemmFp8>();
  f->slots = cfg_.depth * ops::kFp8SlotsPerBlock;
  const size_t S = size_t(f->slots);
  f->amax.allocate(S);
  f->scale.allocate(S);
  f->scale_inv.allocate(S);
  f->seen.allocate(S);
  f->amax.zero();
  f->seen.zero();
  f->history.allocate(std::max<size_t>(S * size_t(history), 1));
  f->history.zero();
  f->seen_host.assign(S, 0);
  const size_t nw = size_t(cfg_.depth) * 4;
  f->w_amax.allocate(nw);
  f->w_scale.allocate(nw);
  f->w_scale_inv.allocate(nw);
  for (int l = 0; l < 4; ++l) f->w_off[l] = f->w_block, f->w_block += in[l] * out[l];
  f->w_q.allocate(size_t(f->w_block * cfg_.depth));
  f->w_qT.allocate(size_t(f->w_block * cfg_.depth));
  fp8_ = std::move(f);
  if (max_batch_ > 0) {  // planned already: plan again, now with the activation codes
    const int b = max_batch_;
    max_batch_ = 0;
    plan(b, training_plan_);
  }
  refresh_fp8_weights();
  KAT_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

int KatModelCuda::fp8_history_slots() const { return fp8_ ? fp8_->slots : 0; }
int KatModelCuda::fp8_history_length() const { return fp8_ ? fp8_->recipe.history : 0; }

void KatModelCuda::download_fp8_history(std::vector<float>& amax, std::vector<int64_t>& seen) const {
  KAT_CHECK(fp8_ != nullptr, "KatModelCuda::download_fp8_history: FP8 is not enabled (enable_fp8)");
  const Fp8& f = *fp8_;
  amax.assign(size_t(f.slots) * size_t(f.recipe.history), 0.0f);
  seen.assign(size_t(f.slots), 0);
  if (!amax.empty())
    KAT_CUDA_CHECK(cudaMemcpyAsync(amax.data(), f.history.data(), amax.size() * sizeof(float),
                                   cudaMemcpyDeviceToHost, stream_));
  KAT_CUDA_CHECK(
      cudaMemcpyAsync(seen.data(), f.seen.data(), seen.size() * sizeof(int64_t), cudaMemcpyDeviceToHost, stream_));
  KAT_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void KatModelCuda::upload_fp8_history(const std::vector<float>& amax, const std::vector<int64_t>& seen) {
  KAT_CHECK(fp8_ != nullptr, "KatModelCuda::upload_fp8_history: FP8 is not enabled (enable_fp8)");
  Fp8& f = *fp8_;
  ops::check_fp8_history(amax, seen, f.slots, f.recipe.history, cfg_.depth);
  if (!amax.empty())
    KAT_CUDA_CHECK(cudaMemcpyAsync(f.history.data(), amax.data(), amax.size() * sizeof(float),
                                   cudaMemcpyHostToDevice, stream_));
  KAT_CUDA_CHECK(
      cudaMemcpyAsync(f.seen.data(), seen.data(), seen.size() * sizeof(int64_t), cudaMemcpyHostToDevice, stream_));
  KAT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  f.seen_host = seen;
}

void KatModelCuda::refresh_fp8_weights() {
  if (!fp8_) return;
  Fp8& f = *fp8_;
  int64_t in[4], out[4];
  linear_shapes(cfg_, in, out);
  cudaStream_t s = stream_;
  // amax of each fp32 master W (out, in), then all 4 * depth scales in one call (current scaling:
  // no history), then the codes of W and of W^T (ld_t = out: out is a multiple of 16).
  for (int i = 0; i < cfg_.depth; ++i)
    for (int l = 0; l < 4; ++l)
      cuda::fp8_amax({.n = out[l] * in[l],
                      .dtype = DType::F32,
                      .x = p32(weight_offset(layout_.blocks[i], l)),
                      .amax = f.w_amax.data() + i * 4 + l},
                     s);
  cuda::fp8_scale_update({.count = cfg_.depth * 4,
                          .stride = 1,
                          .format = Fp8Format::E4M3,
                          .margin = f.recipe.margin,
                          .amax = f.w_amax.data(),
                          .scale = f.w_scale.data(),
                          .scale_inv = f.w_scale_inv.data()},
                         s);
  for (int i = 0; i < cfg_.depth; ++i)
    for (int l = 0; l < 4; ++l) {
      const int64_t at = i * f.w_block + f.w_off[l];
      cuda::fp8_cast({.rows = out[l],
                      .cols = in[l],
                      .dtype = DType::F32,
                      .x = p32(weight_offset(layout_.blocks[i], l)),
                      .format = Fp8Format::E4M3,
                      .scale = f.w_scale.data() + i * 4 + l,
                      .q = f.w_q.data() + at,
                      .q_t = f.w_qT.data() + at,
                      .ld_t = out[l]},
                     s);
    }
}

Fp8ActivationSizes fp8_activation_sizes(const ModelConfig& cfg, int64_t max_batch, bool training) {
  Fp8ActivationSizes z;
  const int64_t rows = max_batch * cfg.tokens(), D = cfg.embed_dim, Hd = cfg.mlp_hidden;
  int64_t in[4], out[4];
  linear_shapes(cfg, in, out);
  z.ld = cuda::fp8_padded_rows(rows);
  z.x_q = rows * std::max(D, Hd);
  if (!training) return z;  // an inference plan keeps no codes for a backward
  for (int l = 0; l < 4; ++l) z.xT_off[l] = z.xT_block, z.xT_block += in[l] * z.ld;
  z.x_qT = z.xT_block * cfg.depth;
  z.dy_q = rows * std::max(3 * D, Hd);
  z.dy_qT = std::max(3 * D, Hd) * z.ld;
  return z;
}

int64_t KatModelCuda::fp8_plan_bytes(int64_t max_batch, bool training) const {
  return fp8_ ? fp8_activation_sizes(cfg_, max_batch, training).total() : 0;
}

void KatModelCuda::fp8_release_activations() {
  if (!fp8_) return;
  fp8_->x_qT.release();
  fp8_->x_q.release();
  fp8_->dy_q.release();
  fp8_->dy_qT.release();
}

void KatModelCuda::fp8_plan(int64_t max_batch, bool training) {
  Fp8& f = *fp8_;
  fp8_release_activations();
  const Fp8ActivationSizes z = fp8_activation_sizes(cfg_, max_batch, training);
  f.ld = z.ld;
  f.xT_block = z.xT_block;
  std::copy(std::begin(z.xT_off), std::end(z.xT_off), std::begin(f.xT_off));
  f.x_q.allocate(size_t(z.x_q));
  if (z.x_qT > 0) f.x_qT.allocate(size_t(z.x_qT));
  if (z.dy_q > 0) f.dy_q.allocate(size_t(z.dy_q));
  if (z.dy_qT > 0) f.dy_qT.allocate(size_t(z.dy_qT));
}

void KatModelCuda::fp8_current_scale(int slot, const void* x, int64_t n, Fp8Format fmt, bool use_history) {
  Fp8& f = *fp8_;
  const bool h = use_history && f.recipe.history > 0;
  cuda::fp8_amax({.n = n, .dtype = dtype_, .x = x, .amax = f.amax.data() + slot}, stream_);
  cuda::fp8_scale_update({.count = 1,
                          .stride = 1,
                          .format = fmt,
                          .margin = f.recipe.margin,
                          .amax = f.amax.data() + slot,
                          .history = h ? f.history.data() + int64_t(slot) * f.recipe.history : nullptr,
                          .seen = h ? f.seen.data() + slot : nullptr,
                          .history_length = h ? f.recipe.history : 0,
                          .scale = f.scale.data() + slot,
                          .scale_inv = f.scale_inv.data() + slot},
                         stream_);
}

namespace {
// Every slot of one kind (first = 0: x, 1: dy; stride 2) has a recorded pass.
bool all_seen(const std::vector<int64_t>& seen, int first) {
  for (size_t i = size_t(first); i < seen.size(); i += 2)
    if (seen[i] <= 0) return false;
  return true;
}
}  // namespace

void KatModelCuda::fp8_begin_forward(bool train) {
  Fp8& f = *fp8_;
  f.train_pass = train;
  f.x_delayed = train && f.recipe.history > 0 && all_seen(f.seen_host, 0);
  if (!f.x_delayed) return;
  // Delayed: every x slot's scale from its ring, one thread per slot (stride 2 picks the x slots).
  cuda::fp8_scale_update({.count = f.slots / 2,
                          .stride = 2,
                          .format = Fp8Format::E4M3,
                          .margin = f.recipe.margin,
                          .amax = f.amax.data(),
                          .history = f.history.data(),
                          .seen = f.seen.data(),
                          .history_length = f.recipe.history,
                          .scale = f.scale.data(),
                          .scale_inv = f.scale_inv.data()},
                         stream_);
}

void KatModelCuda::fp8_end_forward() {
  Fp8& f = *fp8_;
  if (!f.train_pass || f.recipe.history == 0) return;
  cuda::fp8_amax_record({.count = f.slots / 2,
                         .stride = 2,
                         .amax = f.amax.data(),
                         .history = f.history.data(),
                         .seen = f.seen.data(),
                         .history_length = f.recipe.history},
                        stream_);
  for (size_t i = 0; i < f.seen_host.size(); i += 2) ++f.seen_host[i];
}

void KatModelCuda::fp8_begin_backward() {
  Fp8& f = *fp8_;
  f.dy_delayed = f.train_pass && f.recipe.history > 0 && all_seen(f.seen_host, 1);
  if (!f.dy_delayed) return;
  const int64_t L = f.recipe.history;
  cuda::fp8_scale_update({.count = f.slots / 2,
                          .stride = 2,
                          .format = Fp8Format::E5M2,
                          .margin = f.recipe.margin,
                          .amax = f.amax.data() + 1,
                          .history = f.history.data() + L,
                          .seen = f.seen.data() + 1,
                          .history_length = f.recipe.history,
                          .scale = f.scale.data() + 1,
                          .scale_inv = f.scale_inv.data() + 1},
                         stream_);
}

void KatModelCuda::fp8_end_backward() {
  Fp8& f = *fp8_;
  if (!f.train_pass || f.recipe.history == 0) return;
  cuda::fp8_amax_record({.count = f.slots / 2,
                         .stride = 2,
                         .amax = f.amax.data() + 1,
                         .history = f.history.data() + f.recipe.history,
                         .seen = f.seen.data() + 1,
                         .history_length = f.recipe.history},
                        stream_);
  for (size_t i = 1; i < f.seen_host.size(); i += 2) ++f.seen_host[i];
}

void KatModelCuda::fp8_linear_forward(int block, int lin, int64_t rows, int64_t in, int64_t out, const void* x,
                                      int64_t b_off, void* y) {
  Fp8& f = *fp8_;
  const int slot = block * ops::kFp8SlotsPerBlock + 2 * lin;  // Fp8Slot: x of linear lin
  if (!f.x_delayed) fp8_current_scale(slot, x, rows * in, Fp8Format::E4M3, f.train_pass);
  // The codes (rows, in) for this GEMM; in a training plan also their transpose (in, ld_t), kept
  // for the backward's weight gradient; the amax for the history when the scale was delayed (else
  // fp8_current_scale has written it).
  uint8_t* qT = training_plan_ ? f.x_qT.data() + block * f.xT_block + f.xT_off[lin] : nullptr;
  cuda::fp8_cast({.rows = rows,
                  .cols = in,
                  .dtype = dtype_,
                  .x = x,
                  .format = Fp8Format::E4M3,
                  .scale = f.scale.data() + slot,
                  .q = f.x_q.data(),
                  .q_t = qT,
                  .amax = f.x_delayed ? f.amax.data() + slot : nullptr},
                 stream_);
  f.gemm->forward({.M = rows,
                   .K = in,
                   .N = out,
                   .x_q = f.x_q.data(),
                   .W_q = f.w_q.data() + block * f.w_block + f.w_off[lin],
                   .x_scale_inv = f.scale_inv.data() + slot,
                   .W_scale_inv = f.w_scale_inv.data() + block * 4 + lin,
                   .b = p32(b_off),
                   .b_bf16 = bias_copy(b_off),
                   .y = y},
                  stream_);
}

void KatModelCuda::fp8_linear_backward(int block, int lin, int64_t rows, int64_t in, int64_t out, const void* dy,
                                       void* dx, int64_t w_off) {
  Fp8& f = *fp8_;
  const int slot = block * ops::kFp8SlotsPerBlock + 2 * lin + 1;  // Fp8Slot: dy of linear lin
  if (!f.dy_delayed) fp8_current_scale(slot, dy, rows * out, Fp8Format::E5M2, f.train_pass);
  // dy (rows, out) -> E5M2 codes (rows, out) and transposed (out, ld_t).
  cuda::fp8_cast({.rows = rows,
                  .cols = out,
                  .dtype = dtype_,
                  .x = dy,
                  .format = Fp8Format::E5M2,
                  .scale = f.scale.data() + slot,
                  .q = f.dy_q.data(),
                  .q_t = f.dy_qT.data(),
                  .amax = f.dy_delayed ? f.amax.data() + slot : nullptr},
                 stream_);
  const int64_t wat = block * f.w_block + f.w_off[lin];
  f.gemm->backward_data({.M = rows,
                         .K = in,
                         .N = out,
                         .dy_q = f.dy_q.data(),
                         .W_qT = f.w_qT.data() + wat,
                         .dy_scale_inv = f.scale_inv.data() + slot,
                         .W_scale_inv = f.w_scale_inv.data() + block * 4 + lin,
                         .dx = dx},
                        stream_);
  // x's scale is the forward's (slot - 1: x of the same linear), still in scale_inv.
  f.gemm->backward_weight({.M = rows,
                           .K = in,
                           .N = out,
                           .dy_qT = f.dy_qT.data(),
                           .x_qT = f.x_qT.data() + block * f.xT_block + f.xT_off[lin],
                           .dy_scale_inv = f.scale_inv.data() + slot,
                           .x_scale_inv = f.scale_inv.data() + slot - 1,
                           .dW = g32(w_off)},
                          stream_);
}

}  // namespace kat
#endif  // KAT_HAVE_CUDA
