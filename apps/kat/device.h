// Shared by the inference commands (eval, infer, predict): --device (the model's weights on a GPU)
// and --eval-crop-pct.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "device_flag.h"
#include "kat/model/kat_model.h"
#include "kat/train/engine.h"
#include "kat/train/gpu_runner.h"
#include "kat/train/inference.h"
#include "kat/train/train_config.h"

namespace kat::cli {

// --precision of the inference commands (eval, infer, predict): the option, and its check against
// --device (kat::check_inference_precision says what each value does).
void add_precision_option(CLI::App* sub, std::string& precision);
void check_precision(const std::string& precision, const std::string& device);

// What eval and predict load and where they run it: --weights/-w, --model/-m, --set, --ema,
// --device and --precision, one description for both commands.
struct CheckpointOptions {
  std::string weights, model, device = "cpu", precision = "auto";
  std::vector<std::string> overrides;
  bool ema = false;
};
void add_checkpoint_options(CLI::App* sub, CheckpointOptions& o);
// Checks --precision against --device (before any data is read), then loads the model.
LoadedModel load_checkpoint(const CheckpointOptions& o);

// "cpu" -> null (use the CPU model). "cuda[:N]" -> a GpuRunner planned for inference only (bf16
// compute, fp32 or FP8 linears as `precision` says) for batches up to max_batch, holding m's
// weights. Errors name the flag.
std::unique_ptr<GpuRunner> inference_runner(const std::string& device, const KatModel& m, int max_batch,
                                            const std::string& precision = "auto");
// The Engine that evaluates m where --device says: the CPU (computing on m itself, in FP8
// emulation with precision fp8; m must outlive the engine) or inference_runner's GPU.
std::unique_ptr<Engine> inference_engine(const std::string& device, KatModel& m, int max_batch,
                                         const std::string& precision = "auto");

inline const char* device_help() { return "cpu, cuda or cuda:N (GPU: bf16 compute unless --precision says)"; }

// --eval-crop-pct as given (CLI11 checks the range [0, 1] when parsing; 0 = not given), else the
// checkpoint's training config (0.875 for plain weights). Errors name the flag.
double eval_crop_pct(double flag, const TrainConfig& checkpoint);

}  // namespace kat::cli
