// Loading a model for evaluation / prediction from either a training checkpoint (config, class
// names and normalisation come from its metadata) or a plain timm-named weights file (config from
// --model).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "kat/model/kat_model.h"
#include "kat/train/gpu_runner.h"
#include "kat/train/train_config.h"

namespace kat {

struct LoadedModel {
  std::unique_ptr<KatModel> model;
  TrainConfig train;  // defaults when the file is not a training checkpoint
  bool from_checkpoint = false;
  std::vector<std::string> class_names;  // may be empty
};

// model_name: used when the file carries no model config (plain weights); overrides apply on top.
// use_ema: load the EMA weights of a training checkpoint (error if it has none).
LoadedModel load_model_for_inference(const std::string& weights, const std::string& model_name,
                                     const std::vector<std::string>& overrides, bool use_ema);

// The precision of inference (kat eval / infer / predict --precision, kat.load(precision=)):
//   auto  the device's default: fp32 on the CPU, bf16 on a GPU
//   fp32  fp32 everywhere (on a GPU: fp32 storage and math, for checks; slower)
//   bf16  GPU only (the CPU computes in fp32: refused there)
//   fp8   the blocks' linear layers in FP8 (src/ops/fp8.h; in inference current-scaled: each
//         tensor's scale from its own amax): FP8 tensor cores on a GPU of compute capability 8.9+
//         (H100, H200, L40), the exact emulation on the CPU (FP8 values, fp32 math; slower)
// A checkpoint trained with --precision fp8 holds fp32 master weights, so any precision reads it.
// Throws kat::Error naming --precision for a value that is unknown or not for that device.
void check_inference_precision(const std::string& precision, bool on_gpu);
// The CPU model m set up for inference in `precision` (checked for the CPU; fp8: the emulation,
// KatModel::enable_fp8); planning stays the caller's.
void prepare_cpu_inference(KatModel& m, const std::string& precision);
// A GpuRunner on GPU `device` planned for inference only (bf16 compute; fp32 or FP8 linears as
// `precision` says) for batches up to max_batch, holding m's weights.
std::unique_ptr<GpuRunner> make_inference_runner(const KatModel& m, int device, int max_batch,
                                                 const std::string& precision);

}  // namespace kat
