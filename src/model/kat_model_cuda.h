// KatModelCuda: the KAT / DeiT model of model/kat_model.h on one CUDA GPU, same forward/backward
// (same op order, same drop-path draws, same parameter table), fp32 or bf16.
//
//   Precision::F32:  activations fp32, GEMMs fp32 (CUBLAS_COMPUTE_32F, no TF32). Matches the CPU
//                    model to fp32 rounding.
//   Precision::BF16: activations bf16 (residual stream included), GEMM inputs bf16 with fp32
//                    accumulation, every other op computes in fp32 and rounds its output once.
//                    Biases, norms, rational coefficients, cls/pos stay fp32.
// In both modes the master weights, gradients and AdamW moments are fp32 on the device; BF16 keeps
// a bf16 working copy of the weights, refreshed by the AdamW kernel (or upload_params).
//
// Device layout: the parameters are the ParamTable of KatModel (same names, order, shapes), but on
// the device every tensor starts at a multiple of 128 elements (padding zeros, never decayed, zero
// gradient), so every weight is 256-byte aligned for cuBLASLt. upload/download convert between the
// flat CPU layout and the padded device layout, so checkpoints interoperate through KatModel.
//
// Memory: everything is allocated by the constructor (parameters, gradients, moments) and plan()
// (activation arena and workspaces for max_batch): forward/backward/step allocate nothing.
// All work is enqueued on the model's stream; forward/backward do not synchronise (except that a
// train forward with drop-path waits for the previous upload of drop-path scales).
// Without KAT_HAVE_CUDA this header declares nothing.
#pragma once
#ifdef KAT_HAVE_CUDA
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "model/config.h"
#include "model/params.h"
#include "ops/cuda/stream.h"  // DType, cudaStream_t
#include "train/optim.h"          // AdamWConfig

namespace kat {

namespace cuda {
class Gemm;
}

class KatModelCuda {
 public:
  enum class Precision { F32, BF16 };

  // stream: the stream every call enqueues on (null = the legacy default stream).
  KatModelCuda(const ModelConfig& cfg, Precision prec, cudaStream_t stream = nullptr);
  ~KatModelCuda();
  KatModelCuda(const KatModelCuda&) = delete;
  KatModelCuda& operator=(const KatModelCuda&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const ParamTable& table() const { return table_; }
  int64_t num_params() const { return table_.total(); }
  Precision precision() const { return prec_; }
  DType storage() const { return st_; }
  cudaStream_t stream() const { return stream_; }

  // Parameters in KatModel's flat layout (num_params() floats, host memory). Synchronous.
  void upload_params(const float* host);
  void download_params(float* host) const;
  void download_grads(float* host) const;
  // AdamW moments in the CPU table layout (for checkpoints) and back (resume).
  void download_moments(float* m_host, float* v_host) const;
  void upload_moments(const float* m_host, const float* v_host, int64_t steps);
  // Logits of the last forward, converted to fp32 on the host: (B, num_classes).
  void download_logits(float* host) const;
  // Features of the last forward (after the final norm), fp32 on the host: (B, tokens, D).
  void download_features(float* host) const;

  // training = false: forward only (eval mode), with one set of block activations reused by every
  // block and no gradient buffers: about depth x less activation memory.
  void plan(int max_batch, bool training = true);
  int planned_batch() const { return max_batch_; }
  bool planned_for_training() const { return training_plan_; }

  // images: device (B, C, H, W) fp32. Returns device logits (B, num_classes) in storage(), valid
  // until the next forward. With train and drop_path_rate > 0, drop-path scales are drawn from rng
  // in exactly the CPU model's order (identical masks for identical rng state).
  const void* forward(const float* images, int B, bool train = false, Rng* rng = nullptr);
  // The same with images stored as image_storage: fp32, or bf16 in bf16 mode (same result: the
  // patch embedding rounds its input to bf16 either way).
  const void* forward(const void* images, DType image_storage, int B, bool train = false, Rng* rng = nullptr);
  const void* features() const;  // device (B, N, D) storage(), after the final norm
  // dlogits: device (B, K) storage(). Accumulates into the fp32 gradients.
  void backward(const void* dlogits);
  void zero_grad();
  // Fill the whole activation arena with 0xff bytes (NaN in fp32 and bf16): a test aid that makes
  // any read of a never-written activation visible.
  void poison_activations();

  // Softmax cross-entropy of the last forward's logits against targets (device (B, K) fp32, soft
  // targets), writing dlogits into the model's own buffer and the mean loss to a device float.
  void loss_forward_backward(const float* targets, float label_smoothing);
  const void* dlogits() const { return dlogits_; }
  float loss_value() const;  // synchronises; the loss of the last loss_forward_backward

  // AdamW (torch semantics, same as kat::AdamW): moments allocated by the constructor.
  void set_optimizer(const AdamWConfig& cfg);
  void adamw_step(double lr);
  int64_t optimizer_steps() const { return opt_t_; }

  // Gradient accumulation: divide the dlogits of the last loss_forward_backward by divisor (the
  // number of micro-batches), as the CPU trainer divides dz; then backward() adds to the gradients.
  void divide_dlogits(float divisor);
  // torch clip_grad_norm_ over all gradients, on the device (deterministic, no synchronisation).
  void clip_grad_norm(double max_norm);
  double last_grad_norm() const;  // synchronises; the norm before the last clip_grad_norm

  // EMA of the fp32 master weights on the device (padded layout, like the parameters).
  void ema_init(const float* host);  // allocates on the first call; host: KatModel's flat layout
  void ema_update(double decay);     // ema = decay ema + (1 - decay) params (kat::ema_update)
  void download_ema(float* host) const;
  // Exchange the master weights with the EMA and refresh the working copy: call once to evaluate
  // the EMA weights, once more to go back. ema_swapped() says which state the model is in.
  void swap_ema();
  bool ema_swapped() const { return ema_swapped_; }

  // One training step on the device: zero_grad, forward(train), loss, backward, AdamW.
  void train_step(const float* images, const float* targets, int B, double lr, float label_smoothing,
                  Rng* rng = nullptr);

  // Device pointers (padded layout) and layout helpers.
  float* device_params() { return params_; }
  float* device_grads() { return grads_; }
  int64_t device_offset(const std::string& name) const;
  int64_t device_total() const { return dev_total_; }

 private:
  struct BlockOffsets {
    int64_t n1w, n1b, qkvw, qkvb, projw, projb, n2w, n2b, fc1w, fc1b, fc2w, fc2b;
    int64_t a1n = -1, a1d = -1, a2n = -1, a2d = -1;
  };
  struct BlockActs {
    void *x_in, *ln1, *qkv, *att, *x_mid, *ln2, *r1, *h, *r2;  // storage st
    float *mean1, *rstd1, *lse, *mean2, *rstd2;                 // fp32
  };
  const void* w(int64_t off) const;  // working copy (bf16 or fp32) of the weight at device offset
  const void* bias_copy(int64_t off) const;
  const float* p32(int64_t off) const { return params_ + off; }
  float* g32(int64_t off) { return grads_ + off; }
  void* sub(void* base, int64_t elems) const;  // base + elems * element size of st_

  ModelConfig cfg_;
  Precision prec_;
  DType st_;
  cudaStream_t stream_;
  ParamTable table_;
  std::vector<int64_t> dev_off_;  // per spec: offset in the padded device layout
  int64_t dev_total_ = 0;
  int64_t off_cls_, off_pos_, off_pew_, off_peb_, off_nw_, off_nb_, off_hw_, off_hb_;
  std::vector<BlockOffsets> blk_;

  std::unique_ptr<cuda::Gemm> gemm_;
  float *params_ = nullptr, *grads_ = nullptr, *m_ = nullptr, *v_ = nullptr;
  void* wbf16_ = nullptr;
  uint8_t* decay_ = nullptr;
  float* ema_ = nullptr;
  bool ema_swapped_ = false;
  void* clip_ws_ = nullptr;
  AdamWConfig opt_cfg_;
  int64_t opt_t_ = 0;

  BlockActs& block_acts(int i) { return acts_[training_plan_ ? i : 0]; }
  int max_batch_ = 0, cur_batch_ = 0;
  bool training_plan_ = true;
  bool dp_active_ = false;
  void* arena_ = nullptr;
  size_t arena_bytes_ = 0;
  std::vector<BlockActs> acts_;
  void *cols_, *x_final_, *feat_, *cls_, *logits_, *tmp_, *dlogits_;
  void *d_x_, *d_tmp_, *d_ln_, *d_qkv_, *d_att_, *d_h_, *d_r_, *d_cls_;
  float *fmean_, *frstd_, *row_loss_, *loss_, *dp_;  // dp_: (depth, 2, B) drop-path scales
  void* ws_ = nullptr;
  float* dp_host_ = nullptr;  // pinned staging for the drop-path scales
  void* dp_event_ = nullptr;  // cudaEvent_t: the last upload of dp_host_ finished
};

}  // namespace kat
#endif  // KAT_HAVE_CUDA
