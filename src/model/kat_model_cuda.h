// KatModelCuda: the KAT / DeiT model of model/kat_model.h on one CUDA GPU, same forward/backward
// (the same ops in the same order, the same drop-path draw, the same ModelLayout and activation
// plan), activations in DType F32 or BF16.
//
//   DType::F32:  activations fp32, GEMMs fp32 (CUBLAS_COMPUTE_32F, no TF32). Matches the CPU
//                model to fp32 rounding.
//   DType::BF16: activations bf16 (residual stream included), GEMM inputs bf16 with fp32
//                accumulation, every other op computes in fp32 and rounds its output once.
//                Biases, norms, rational coefficients, cls/pos stay fp32.
// In both modes the master weights and gradients are fp32 on the device; BF16 keeps a bf16 working
// copy of the weights (working_weights()), refreshed by whoever changes the master weights (the
// AdamW kernel of the training layer, upload_params, exchange_params).
//
// The model holds weights, gradients and activations only: the optimizer state (AdamW moments, EMA,
// clipping workspace) belongs to the training layer (train/device_optimizer.h), which runs its
// kernels on device_params() / device_grads() / working_weights().
//
// Device layout: ModelLayout(cfg, kCudaAlign): every tensor starts at a multiple of 128 elements
// (padding zero, never decayed, zero gradient), so every weight is 256-byte aligned for cuBLASLt.
// upload/download convert between the flat CPU layout and the padded device layout, so checkpoints
// interoperate through KatModel.
//
// Memory: everything is allocated by the constructor (parameters, gradients) and plan() (activation
// arena and workspaces for max_batch), in owning types (ops/cuda/device_memory.h), so a throw half-
// way frees what was taken: forward/backward allocate nothing. All work is enqueued on the model's
// stream; forward/backward do not synchronise (except that a train forward with drop-path waits for
// the previous upload of drop-path scales).
// FP8 (enable_fp8, --precision fp8): the blocks' four linear layers (qkv, proj, fc1, fc2) run as FP8
// GEMMs (ops/cuda/gemm_fp8.h) per the recipe of ops/fp8.h, everything else as in BF16 mode; state
// and kernels in kat_model_cuda_fp8.{h,cpp}.
// Without KAT_HAVE_CUDA this header declares nothing.
#pragma once
#ifdef KAT_HAVE_CUDA
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kat/core/dtype.h"
#include "kat/core/fp8.h"
#include "kat/core/rng.h"
#include "kat/model/activations.h"
#include "kat/model/config.h"
#include "kat/model/layout.h"
#include "kat/model/params.h"
#include "ops/attention_backend.h"
#include "ops/cuda/attention.h"
#include "ops/cuda/device_memory.h"
#include "ops/cuda/stream.h"  // cudaStream_t

namespace kat {

namespace cuda {
class Gemm;
}

class KatModelCuda {
 public:
  // stream: the stream every call enqueues on (null = the legacy default stream).
  KatModelCuda(const ModelConfig& cfg, DType dtype, cudaStream_t stream = nullptr);
  ~KatModelCuda();
  KatModelCuda(const KatModelCuda&) = delete;
  KatModelCuda& operator=(const KatModelCuda&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const ModelLayout& layout() const { return layout_; }
  const ParamTable& table() const { return layout_.table(); }
  int64_t num_params() const { return table().total(); }
  DType dtype() const { return dtype_; }
  cudaStream_t stream() const { return stream_; }

  // Parameters in KatModel's flat layout (num_params() floats, host memory). Synchronous.
  void upload_params(const float* host);
  void download_params(float* host) const;
  void download_grads(float* host) const;
  // Any device buffer in the padded layout (device_total() floats) from / to the flat host layout
  // (optimizer moments, EMA). Synchronous.
  void upload_padded(const float* host, float* dev) const;
  void download_padded(const float* dev, float* host) const;
  // Logits of the last forward, converted to fp32 on the host: (B, num_classes).
  void download_logits(float* host) const;
  // Features of the last forward (after the final norm), fp32 on the host: (B, tokens, D).
  void download_features(float* host) const;

  // training = false: forward only (eval mode), with one set of block activations reused by every
  // block and no gradient buffers: about depth x less activation memory.
  // plan() also settles which attention implementation runs (ops/attention_backend.h): the requested
  // one, or ours where cuDNN cannot run this model (a one-line note on stderr says why). A batch
  // below the plan's that cuDNN refuses runs ours for that call (the saved lse is the same quantity).
  void plan(int max_batch, bool training = true);
  int planned_batch() const { return max_batch_; }
  bool planned_for_training() const { return training_plan_; }
  ops::AttentionBackend attention_backend() const { return attention_; }

  // images: device (B, C, H, W) fp32. Returns device logits (B, num_classes) in dtype(), valid
  // until the next forward. With train and drop_path_rate > 0, drop-path scales are drawn from rng
  // by draw_drop_path (model/drop_path.h), as the CPU model draws them.
  const void* forward(const float* images, int B, bool train = false, Rng* rng = nullptr);
  // The same with images stored as image_dtype: fp32, or bf16 in bf16 mode (same result: the
  // patch embedding rounds its input to bf16 either way).
  const void* forward(const void* images, DType image_dtype, int B, bool train = false, Rng* rng = nullptr);
  const void* features() const;  // device (B, N, D) dtype(), after the final norm

  // CUDA graphs for the inference forward (train = false), OPT-IN (`kat bench infer --cuda-graph`):
  // the first forward of a (images pointer, image dtype, B) runs eagerly, then is captured once into
  // a graph; later ones replay it, one launch instead of ~15 per block (small batches are
  // launch-bound). Same kernels, same arguments, so the same bits as the eager forward. A graph
  // holds the pointers it was captured with: plan() and exchange_params() drop them all; weights
  // changed in place (upload_params, the optimizer) are seen. At most kMaxGraphs shapes are kept
  // (further ones run eagerly). Needs a stream of its own (not the legacy default stream); a capture
  // that fails (a kernel cuDNN cannot capture, ...) turns graphs off with a note on stderr.
  // No effect on training forwards.
  static constexpr int kMaxGraphs = 16;
  void set_cuda_graphs(bool on);
  bool cuda_graphs() const { return graphs_on_; }
  int64_t graph_replays() const { return graph_replays_; }  // forwards served by a replay so far
  // dlogits: device (B, K) dtype(). Accumulates into the fp32 gradients.
  void backward(const void* dlogits);
  void zero_grad();
  // Fill the whole activation arena with 0xff bytes (NaN in fp32 and bf16): a test aid that makes
  // any read of a never-written activation visible.
  void poison_activations();

  // Softmax cross-entropy of the last forward's logits against targets (device (B, K) fp32, soft
  // targets), writing dlogits into the model's own buffer and the mean loss to a device float.
  void loss_forward_backward(const float* targets, float label_smoothing);
  const void* dlogits() const { return acts_.dlogits; }
  float loss_value() const;  // synchronises; the loss of the last loss_forward_backward
  // Gradient accumulation: divide the dlogits of the last loss_forward_backward by divisor (the
  // number of micro-batches), as the CPU trainer divides dz; then backward() adds to the gradients.
  void divide_dlogits(float divisor);

  // For the training layer's optimizer: device buffers in the padded layout (device_total()
  // elements): fp32 master weights, fp32 gradients, and the bf16 working copy (null in F32 mode).
  float* device_params() { return params_.data(); }
  float* device_grads() { return grads_.data(); }
  void* working_weights() { return wbf16_.data(); }
  // Exchange the master weights with `other` (device_total() floats, e.g. the EMA) and refresh the
  // working copy: evaluating the EMA weights without a copy. Enqueued on stream().
  void exchange_params(cuda::DeviceBuffer<float>& other);
  int64_t device_offset(const std::string& name) const { return layout_.offset(name); }
  int64_t device_total() const { return layout_.total(); }

  // FP8 linear layers (--precision fp8 on the GPU; EXPERIMENTAL until run on a GPU). The recipe is
  // ops/fp8.h's, the same as the CPU emulation's (KatModel::enable_fp8): per block, qkv / proj /
  // fc1 / fc2 quantise x and W to E4M3 and dy to E5M2 with power-of-two per-tensor scales; W is
  // current-scaled (quantised from the fp32 master weights whenever they change); x and dy are
  // delayed-scaled in training passes (the largest amax of the last `history` passes; the first
  // pass: current) and current-scaled in eval. The patch embedding and the head stay bf16.
  // Needs DType::BF16 and a GPU of compute capability >= 8.9 (kat::Error otherwise) and every
  // linear's in / out a multiple of 16. Allocates the FP8 state; re-plans if planned; the weights
  // are quantised at once. Call once, before training.
  void enable_fp8(int history, int margin);
  void enable_fp8();  // ops::Fp8Recipe's defaults (history 16, margin 0)
  bool fp8_enabled() const { return fp8_ != nullptr; }
  // The amax history in ops::Fp8AmaxHistory's layout (Engine::download_fp8_history's, so a
  // checkpoint is the CPU's): amax (slots, length), seen (slots), slots = depth * 8 in ops::Fp8Slot
  // order. Synchronous. upload checks the sizes, naming them.
  int fp8_history_slots() const;
  int fp8_history_length() const;
  void download_fp8_history(std::vector<float>& amax, std::vector<int64_t>& seen) const;
  void upload_fp8_history(const std::vector<float>& amax, const std::vector<int64_t>& seen);
  // Re-quantise the FP8 weights from the fp32 master weights (their amax, scale, E4M3 codes and
  // transposed codes): whoever changes the master weights calls it (the optimizer step; upload_params
  // and exchange_params do it themselves). No-op without FP8. Enqueued on stream().
  void refresh_fp8_weights();

 private:
  using Acts = Activations<void*>;
  using BlockActs = BlockActivations<void*>;
  const void* w(int64_t off) const;  // working copy (bf16 or fp32) of the weight at device offset
  const void* bias_copy(int64_t off) const;
  const float* p32(int64_t off) const { return params_.data() + off; }
  float* g32(int64_t off) { return grads_.data() + off; }
  void refresh_working_weights();
  ops::AttentionBackend choose_attention(int64_t B, bool training) const;
  // The forward's kernels, enqueued on stream_ (forward() without the graph cache; arguments
  // checked by forward()).
  const void* forward_eager(const void* images, DType image_dtype, int B, bool train, Rng* rng);
  // forward(train = false) through the graph cache: replay, or capture (after an eager run).
  const void* forward_graphed(const void* images, DType image_dtype, int B);
  void drop_graphs();
  void attention_forward(const cuda::AttentionForwardArgs& a);
  void attention_backward(const cuda::AttentionBackwardArgs& a);
  // FP8 (kat_model_cuda_fp8.cpp). lin: 0 qkv, 1 proj, 2 fc1, 3 fc2 (ops::Fp8Slot's order).
  void fp8_plan(int64_t max_batch, bool training);                 // the activation codes of plan()
  void fp8_release_activations();                                  // (plan() frees them before its memory check)
  int64_t fp8_plan_bytes(int64_t max_batch, bool training) const;  // 0 without FP8
  void fp8_begin_forward(bool train);                              // delayed x scales from the history
  void fp8_end_forward();                                          // a training pass records its x amaxes
  void fp8_begin_backward();                                       // delayed dy scales from the history
  void fp8_end_backward();                                         // a training pass records its dy amaxes
  // y (rows, out) bf16 = x (rows, in) bf16 through E4M3 codes, + b (the bias at b_off).
  void fp8_linear_forward(int block, int lin, int64_t rows, int64_t in, int64_t out, const void* x, int64_t b_off,
                          void* y);
  // dx (rows, in) bf16 = dy W and dW (at w_off) += dy^T x through E5M2 dy codes and the forward's
  // saved x codes. The bias gradient is not taken here (the column sum over the bf16 dy).
  void fp8_linear_backward(int block, int lin, int64_t rows, int64_t in, int64_t out, const void* dy, void* dx,
                           int64_t w_off);
  // Current scaling of one slot: its amax now, then its scale (from the history when use_history
  // and the slot has one).
  void fp8_current_scale(int slot, const void* x, int64_t n, Fp8Format f, bool use_history);

  ModelConfig cfg_;
  DType dtype_;  // activations (and the working copy of the weights)
  cudaStream_t stream_;
  ModelLayout layout_;  // kCudaAlign

  std::unique_ptr<cuda::Gemm> gemm_;
  cuda::DeviceBuffer<float> params_, grads_;  // (device_total) fp32
  cuda::DeviceBuffer<uint16_t> wbf16_;        // (device_total) bf16 working copy; empty in F32

  BlockActs& block_acts(int i) { return acts_.blocks[training_plan_ ? i : 0]; }
  int max_batch_ = 0, cur_batch_ = 0;
  bool training_plan_ = true;
  bool dp_active_ = false;
  ops::AttentionBackend attention_ = ops::AttentionBackend::Ours;  // settled by plan()
  cuda::DeviceBuffer<char> arena_;
  Acts acts_{};                        // carved from arena_ (SoftmaxSaved::LogSumExp, device loss)
  cuda::DeviceBuffer<char> ws_;        // reduction workspace of the step
  cuda::PinnedBuffer<float> dp_host_;  // (depth, 2, max_batch) staging of the drop-path scales
  cuda::CudaEvent dp_event_;           // the last upload of dp_host_ finished

  struct GraphKey {
    const void* images;
    DType image_dtype;
    int B;
    bool operator==(const GraphKey& o) const {
      return images == o.images && image_dtype == o.image_dtype && B == o.B;
    }
  };
  struct Fp8;                 // kat_model_cuda_fp8.h
  std::unique_ptr<Fp8> fp8_;  // null: no FP8

  struct Graph;  // an instantiated cudaGraphExec_t (kat_model_cuda.cpp)
  bool graphs_on_ = false;
  std::vector<std::pair<GraphKey, std::unique_ptr<Graph>>> graphs_;
  int64_t graph_replays_ = 0;
};

}  // namespace kat
#endif  // KAT_HAVE_CUDA
