// KatModelCuda's FP8 state (KatModelCuda::enable_fp8; the recipe: ops/fp8.h). Private to
// kat_model_cuda.cpp and kat_model_cuda_fp8.cpp: complete here so that both can own and free it.
// Every buffer is device memory unless said otherwise; shapes in elements.
#pragma once
#ifdef KAT_HAVE_CUDA
#include <cstdint>
#include <memory>
#include <vector>

#include "model/kat_model_cuda.h"
#include "ops/cuda/device_memory.h"
#include "ops/cuda/gemm_fp8.h"
#include "ops/fp8.h"

namespace kat {

// The FP8 activation buffers' sizes in bytes for a plan of max_batch images (KatModelCuda::fp8_plan
// allocates them, plan()'s memory check counts them), with the offsets and ld fp8_plan sets.
struct Fp8ActivationSizes {
  int64_t ld = 0, x_q = 0, x_qT = 0, dy_q = 0, dy_qT = 0, xT_off[4] = {}, xT_block = 0;
  int64_t total() const { return x_q + x_qT + dy_q + dy_qT; }
};
Fp8ActivationSizes fp8_activation_sizes(const ModelConfig& cfg, int64_t max_batch, bool training);

struct KatModelCuda::Fp8 {
  ops::Fp8Recipe recipe;
  std::unique_ptr<cuda::GemmFp8> gemm;
  int slots = 0;  // depth * ops::kFp8SlotsPerBlock

  // Per slot (slots), ops::Fp8Slot order (per block x then dy of qkv, proj, fc1, fc2), the layout of
  // Engine::download_fp8_history so that checkpoints are shared with the CPU:
  cuda::DeviceBuffer<float> amax;       // (slots) the amax of the slot's tensor in the last pass
  cuda::DeviceBuffer<float> history;    // (slots, recipe.history) rings (ops::Fp8AmaxHistory::amax)
  cuda::DeviceBuffer<int64_t> seen;     // (slots) passes recorded per slot
  cuda::DeviceBuffer<float> scale;      // (slots) s of the slot's tensor in the current pass
  cuda::DeviceBuffer<float> scale_inv;  // (slots) 1 / s, the GEMMs' operand scales
  // Host mirror of `seen` (the host decides between the batched delayed scales and per-tensor
  // current scaling without reading the device): every record increments it as the device does.
  std::vector<int64_t> seen_host;

  // Weights, 4 per block (index block * 4 + lin), current-scaled from the fp32 master weights:
  cuda::DeviceBuffer<float> w_amax, w_scale, w_scale_inv;  // (depth * 4)
  // E4M3 codes of W (out, in) and of W^T (in, out) (backward data's K-major operand), per block
  // at w_off[lin] within a block of w_block bytes (in * out bytes each; all multiples of 256).
  cuda::DeviceBuffer<uint8_t> w_q, w_qT;  // (depth * w_block)
  int64_t w_off[4] = {}, w_block = 0;

  // Activations (plan): ld = fp8_padded_rows(max_batch * tokens).
  int64_t ld = 0;
  // Training plans: per block the transposed E4M3 codes of each linear's input, (in, ld_t) at
  // xT_off[lin] (ld_t = fp8_padded_rows(rows) of the pass, <= ld), saved by the forward for the
  // backward's weight gradient. Empty in an inference plan.
  cuda::DeviceBuffer<uint8_t> x_qT;  // (depth * xT_block)
  int64_t xT_off[4] = {}, xT_block = 0;
  cuda::DeviceBuffer<uint8_t> x_q;    // (max rows, max(D, Hd)) scratch: the forward GEMM's x codes
  cuda::DeviceBuffer<uint8_t> dy_q;   // (max rows, max(3D, Hd)) scratch: E5M2 dy codes
  cuda::DeviceBuffer<uint8_t> dy_qT;  // (max(3D, Hd), ld) scratch: their transpose

  // The pass in flight: train (delayed scales, recorded amaxes) or eval (current, nothing recorded),
  // and whether the x / dy scales came from the history in one batched update (else per tensor).
  bool train_pass = false, x_delayed = false, dy_delayed = false;
};

}  // namespace kat
#endif  // KAT_HAVE_CUDA
