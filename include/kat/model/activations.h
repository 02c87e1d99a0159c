// The activation plan: every buffer a forward/backward of batch B reads or writes, with its shape,
// in one list for every backend. A backend carves the buffers from one arena planned once for a
// maximum batch (so forward/backward allocate nothing) by passing plan_activations() a `take`
// that counts, then carves.
//
//   A (template) the pointer type of activation storage: float* on the CPU (fp32); void* on the
//                GPU (the model's DType, fp32 or bf16). Statistics, losses and scales are fp32.
//   take(name, shape, fp32) -> void*   one buffer of prod(shape) elements: fp32 when fp32 is set,
//                else in the activation storage type. Buffers are taken in the order below.
//
// Backend differences are options, not second copies: which softmax statistics the attention
// backward needs (the CPU keeps the probabilities, the GPU's flash-style kernel only the
// log-sum-exp), whether the loss runs on the device (GPU), and whether one set of block buffers
// serves every block (GPU inference plan: each block writes its buffers before reading them).
#pragma once
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "kat/model/config.h"
#include "kat/model/drop_path.h"

namespace kat {

// The saved activations of one block (shapes for B images, N tokens, D width, Hd hidden, H heads).
template <class A>
struct BlockActivations {
  A x_in;          // (B, N, D) block input (residual stream)
  A ln1;           // (B, N, D)
  float* mean1;    // (B*N)
  float* rstd1;    // (B*N)
  A qkv;           // (B, N, 3D)
  float* softmax;  // CPU: probabilities (B, H, N, N); GPU: log-sum-exp (B, H, N)
  A att;           // (B, N, D) attention output before proj
  A x_mid;         // (B, N, D) residual stream after the attention branch
  A ln2;           // (B, N, D)
  float* mean2;    // (B*N)
  float* rstd2;    // (B*N)
  A r1;            // (B, N, D)  act1(ln2)              [KAT only, else null]
  A h;             // (B, N, Hd) fc1 output
  A r2;            // (B, N, Hd) act2(h) or GELU(h)
};

template <class A>
struct Activations {
  std::vector<BlockActivations<A>> blocks;  // depth sets (training) or one shared set
  A cols;                                   // (B, P, C*p*p) im2col of the images
  A x_final;                                // (B, N, D) residual stream after the last block
  A feat;                                   // (B, N, D) after the final norm
  float* fmean;                             // (B*N)
  float* frstd;                             // (B*N)
  A cls;                                    // (B, D) feat[:, 0]
  A logits;                                 // (B, K)
  A dlogits;                                // (B, K) loss gradient                 [device loss only]
  A tmp;                                    // (B, max(N, P), D) branch outputs, patch embedding
  // Backward scratch (training plans only, else null).
  A d_x, d_tmp, d_ln;  // (B, N, D)
  A d_qkv;             // (B, N, 3D)
  A d_att;             // (B, N, D)
  A d_h, d_r;          // (B, N, Hd)
  A d_cls;             // (B, D)
  float* row_loss;     // (B)                            [device loss only]
  float* loss;         // (1) mean loss                   [device loss only]
  float* drop_path;    // (depth, 2, B) drop-path scales, see drop_path.h
};

enum class SoftmaxSaved { Probabilities, LogSumExp };

struct ActivationPlanOptions {
  bool training = true;  // keep every block's activations and the backward scratch
  SoftmaxSaved softmax = SoftmaxSaved::Probabilities;
  bool device_loss = false;  // dlogits, row_loss, loss buffers
};

template <class A, class Take>
void plan_activations(const ModelConfig& cfg, int64_t B, const ActivationPlanOptions& o, Activations<A>& a,
                      Take&& take) {
  const int64_t N = cfg.tokens(), D = cfg.embed_dim, Hd = cfg.mlp_hidden, H = cfg.num_heads;
  const int64_t P = cfg.num_patches(), K = cfg.num_classes;
  const int64_t Kp = int64_t(cfg.in_chans) * cfg.patch_size * cfg.patch_size;
  auto act = [&](const char* name, std::initializer_list<int64_t> shape) {
    return static_cast<A>(take(name, shape, false));
  };
  auto f32 = [&](const char* name, std::initializer_list<int64_t> shape) {
    return static_cast<float*>(take(name, shape, true));
  };
  a.blocks.assign(o.training ? cfg.depth : 1, BlockActivations<A>{});
  for (auto& b : a.blocks) {
    b.x_in = act("x_in", {B, N, D});
    b.ln1 = act("ln1", {B, N, D});
    b.mean1 = f32("mean1", {B * N});
    b.rstd1 = f32("rstd1", {B * N});
    b.qkv = act("qkv", {B, N, 3 * D});
    b.softmax = o.softmax == SoftmaxSaved::Probabilities ? f32("softmax_probs", {B, H, N, N})
                                                         : f32("softmax_lse", {B, H, N});
    b.att = act("att", {B, N, D});
    b.x_mid = act("x_mid", {B, N, D});
    b.ln2 = act("ln2", {B, N, D});
    b.mean2 = f32("mean2", {B * N});
    b.rstd2 = f32("rstd2", {B * N});
    b.r1 = cfg.is_kat() ? act("r1", {B, N, D}) : nullptr;
    b.h = act("h", {B, N, Hd});
    b.r2 = act("r2", {B, N, Hd});
  }
  a.cols = act("cols", {B, P, Kp});
  a.x_final = act("x_final", {B, N, D});
  a.feat = act("feat", {B, N, D});
  a.fmean = f32("fmean", {B * N});
  a.frstd = f32("frstd", {B * N});
  a.cls = act("cls", {B, D});
  a.logits = act("logits", {B, K});
  a.dlogits = o.device_loss ? act("dlogits", {B, K}) : nullptr;
  a.tmp = act("tmp", {B, std::max(N, P), D});
  a.d_x = a.d_tmp = a.d_ln = a.d_qkv = a.d_att = a.d_h = a.d_r = a.d_cls = nullptr;
  if (o.training) {
    a.d_x = act("d_x", {B, N, D});
    a.d_tmp = act("d_tmp", {B, N, D});
    a.d_ln = act("d_ln", {B, N, D});
    a.d_qkv = act("d_qkv", {B, N, 3 * D});
    a.d_att = act("d_att", {B, N, D});
    a.d_h = act("d_h", {B, N, Hd});
    a.d_r = act("d_r", {B, N, Hd});
    a.d_cls = act("d_cls", {B, D});
  }
  a.row_loss = o.device_loss ? f32("row_loss", {B}) : nullptr;
  a.loss = o.device_loss ? f32("loss", {1}) : nullptr;
  a.drop_path = f32("drop_path", {drop_path_scale_count(cfg, B)});
}

// Elements of a buffer of this shape.
inline int64_t shape_numel(std::initializer_list<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace kat
