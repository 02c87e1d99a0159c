// The KAT / DeiT vision transformer (docs/MODEL.md §2) on the CPU with explicit forward and backward.
//
//   tokens = [cls ; PatchEmbed(img)] + pos_embed            (B, N, D), N = 1 + (img/p)^2
//   per block:  x = x + DropPath(Attn(LN1(x)));  x = x + DropPath(FFN(LN2(x)))
//   KAT FFN: fc2(act2(fc1(act1(x))))    DeiT FFN: fc2(GELU(fc1(x)))
//   features = LN(x) (B, N, D);  logits = head(features[:, 0])  (B, K)
//
// Memory: parameters and gradients are flat buffers carved by the model's ModelLayout (layout.h,
// CPU alignment: the flat checkpoint layout); activations are planned once for a maximum batch
// size (plan()) by the shared activation plan (activations.h) and carved from one arena, so
// forward/backward allocate nothing. The CUDA model (kat_model_cuda.h) uses the same layout, plan
// and drop-path draw; its forward/backward list the same ops in the same order.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kat/core/rng.h"
#include "kat/model/activations.h"
#include "kat/model/config.h"
#include "kat/model/layout.h"
#include "kat/model/params.h"

namespace kat {

namespace io {
class SafetensorsFile;
class SafetensorsWriter;
}  // namespace io

class KatModel {
 public:
  explicit KatModel(const ModelConfig& cfg);
  ~KatModel();
  KatModel(KatModel&&) noexcept;
  KatModel& operator=(KatModel&&) noexcept;

  const ModelConfig& config() const { return cfg_; }
  const ParamTable& table() const { return layout_.table(); }
  const ModelLayout& layout() const { return layout_; }
  int64_t num_params() const { return table().total(); }

  std::vector<float> params;  // (num_params) fp32 master weights
  std::vector<float> grads;   // (num_params) accumulated by backward()

  // Initialise every parameter (docs/MODEL.md §3; cfg.init = "paper" or "timm").
  void init_params(uint64_t seed);
  // Plan the activation arena for batches of up to max_batch images.
  void plan(int max_batch);
  int planned_batch() const { return max_batch_; }

  // images: (B, C, H, W) fp32, normalized. When train is set, drop-path draws from rng.
  // Returns logits (B, num_classes), valid until the next forward.
  const float* forward(const float* images, int B, bool train = false, Rng* rng = nullptr);
  const float* features() const;  // (B, N, D) after the final norm, from the last forward
  // dlogits: (B, K) gradient of the loss w.r.t. the logits of the last forward. Accumulates into
  // grads (call zero_grad() first for a fresh step).
  void backward(const float* dlogits);
  void zero_grad();
  // Where the last forward first produced a NaN/Inf, in forward order ("blocks.3.mlp.act2 output"),
  // or "" when every activation is finite. Also reports non-finite parameters.
  std::string first_nonfinite() const;

  // FP8 emulation of the blocks' linear layers (--precision fp8 on the CPU; the recipe, which the
  // GPU follows too: src/ops/fp8.h; the GPU's FP8 model: KatModelCuda::enable_fp8 in
  // src/model/kat_model_cuda.h). Off by default: the fp32 path, untouched. On: qkv, proj, fc1
  // and fc2 round x and W to their E4M3 values in the forward and dy to its E5M2 values in the
  // backward (per-tensor power-of-two scales) and multiply in fp32. A training forward (train =
  // true) and its backward scale x and dy from the amax history (delayed scaling) and advance it
  // once; an eval forward scales x by its own amax (current scaling) and leaves the history alone;
  // W is always current-scaled. enable_fp8() takes ops::Fp8Recipe's defaults (history 16 passes,
  // margin 0); history 0: current scaling everywhere. Enabling (again) clears the history.
  void enable_fp8();
  void enable_fp8(int history, int margin);
  bool fp8_enabled() const { return fp8_ != nullptr; }
  // The amax history (training state: checkpoints hold it) in ops::Fp8AmaxHistory's layout: amax
  // (slots, length), seen (slots) passes recorded per slot; slots = depth * 8 (ops::Fp8Slot order:
  // per block x then dy of qkv, proj, fc1, fc2). set_fp8_history checks the sizes, naming them.
  int fp8_history_slots() const;
  int fp8_history_length() const;
  void get_fp8_history(std::vector<float>& amax, std::vector<int64_t>& seen) const;
  void set_fp8_history(const std::vector<float>& amax, const std::vector<int64_t>& seen);

  // Checkpoint I/O with timm names. load_weights rejects missing, unexpected or mis-shaped tensors
  // with a message naming the tensor; prefix selects e.g. "ema." inside a training checkpoint.
  void load_weights(const io::SafetensorsFile& f, const std::string& prefix = "");
  void add_weights(io::SafetensorsWriter& w, const std::string& prefix = "", const float* values = nullptr) const;

  float* param(const std::string& name) { return params.data() + table().at(name).offset; }
  float* grad(const std::string& name) { return grads.data() + table().at(name).offset; }

 private:
  ModelConfig cfg_;
  ModelLayout layout_;  // kCpuAlign: backend offsets = flat table offsets

  int max_batch_ = 0, cur_batch_ = 0;
  bool drop_path_active_ = false;
  std::vector<float> arena_;
  Activations<float*> acts_;  // carved from arena_ (SoftmaxSaved::Probabilities, host loss)

  struct Fp8State;                 // src/model/kat_model_fp8.cpp
  std::unique_ptr<Fp8State> fp8_;  // null: fp32
  bool fp8_train_pass_ = false;    // the last forward trained: its backward's dy scales are delayed
  // One block linear in FP8 (see enable_fp8). lin: 0 qkv, 1 proj, 2 fc1, 3 fc2. The forward
  // replaces x (rows, in) by its E4M3 values in place (the backward's operand; no other op reads
  // these activations) and writes W's into the model's copy; the backward rounds dy (rows, out) in
  // place (no op reads it afterwards; db is taken from the fp32 dy first).
  void fp8_linear_forward(int block, int lin, int64_t rows, int64_t in, int64_t out, float* x, int64_t w_off,
                          int64_t b_off, float* y);
  void fp8_linear_backward(int block, int lin, int64_t rows, int64_t in, int64_t out, const float* xq, float* dy,
                           float* dx, int64_t w_off, int64_t b_off);
};

// Shape and parameter-name checks shared by `kat infer` and the loaders.
void check_input_shape(const ModelConfig& cfg, const std::vector<int64_t>& shape, const std::string& what);

// Weight files (timm names; training state such as ema.* / optim.* / state.* / fp8.* is not a weight).
// check_weight_names: every parameter of m present as prefix + name, and no other weight in the
// file, else an error naming the tensors and the file. weight_dtype_problem: "" for F32/F16/BF16,
// else the message naming the tensor's dtype.
void check_weight_names(const KatModel& m, const io::SafetensorsFile& f, const std::string& prefix = "");
std::string weight_dtype_problem(const io::SafetensorsFile& f, const std::string& key);

}  // namespace kat
