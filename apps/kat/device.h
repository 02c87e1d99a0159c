// --device for the inference commands (eval, infer, predict): the model's weights on a GPU.
#pragma once
#include <memory>
#include <string>

#include "model/kat_model.h"
#include "train/gpu_runner.h"

namespace kat::cli {

// "cpu" -> null (use the CPU model). "cuda[:N]" -> a GpuRunner planned for inference only (bf16
// compute) for batches up to max_batch, holding m's weights. Errors name the flag.
std::unique_ptr<GpuRunner> inference_runner(const std::string& device, const KatModel& m, int max_batch);

inline const char* device_help() {
  return "cpu, cuda or cuda:N (GPU: bf16 compute)";
}

}  // namespace kat::cli
