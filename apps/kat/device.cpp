#include "device.h"

#include "kat/core/error.h"
#include "kat/train/cpu_engine.h"
#include "kat/train/inference.h"
#include "kat/train/optim.h"

namespace kat::cli {

void add_precision_option(CLI::App* sub, std::string& precision) {
  sub->add_option("--precision", precision,
                  "auto (fp32 on the CPU, bf16 on a GPU), fp32, bf16 (GPU only) or fp8: the blocks' linear "
                  "layers in FP8, current-scaled (FP8 tensor cores on compute capability 8.9+, e.g. H100; "
                  "on the CPU an exact emulation, slower than fp32)")
      ->check(CLI::IsMember({"auto", "fp32", "bf16", "fp8"}))
      ->capture_default_str();
}

void check_precision(const std::string& precision, const std::string& device) {
  check_inference_precision(precision, parse_device(device) >= 0);
}

void add_checkpoint_options(CLI::App* sub, CheckpointOptions& o) {
  sub->add_option("--weights,-w", o.weights, "Training checkpoint or plain weights (.safetensors)")->required();
  sub->add_option("--model,-m", o.model, "Model name, needed for plain weights files");
  sub->add_option("--set", o.overrides, "Model config override key=value");
  sub->add_flag("--ema", o.ema, "Use the checkpoint's EMA weights");
  sub->add_option("--device", o.device, device_help())->capture_default_str();
  add_precision_option(sub, o.precision);
}

LoadedModel load_checkpoint(const CheckpointOptions& o) {
  check_precision(o.precision, o.device);
  return load_model_for_inference(o.weights, o.model, o.overrides, o.ema);
}

std::unique_ptr<GpuRunner> inference_runner(const std::string& device, const KatModel& m, int max_batch,
                                            const std::string& precision) {
  const int dev = parse_device(device);
  return dev < 0 ? nullptr : make_inference_runner(m, dev, max_batch, precision);
}

std::unique_ptr<Engine> inference_engine(const std::string& device, KatModel& m, int max_batch,
                                         const std::string& precision) {
  if (auto gpu = inference_runner(device, m, max_batch, precision)) return gpu;
  prepare_cpu_inference(m, precision);
  m.plan(max_batch);
  return std::make_unique<CpuEngine>(m);
}

double eval_crop_pct(double flag, const TrainConfig& checkpoint) {
  const double pct = flag > 0 ? flag : checkpoint.eval_crop_pct;
  KAT_CHECK(pct > 0 && pct <= 1, "--eval-crop-pct must be in (0, 1], got ", pct);
  return pct;
}

}  // namespace kat::cli
