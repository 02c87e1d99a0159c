#include "device.h"

#include "kat/core/error.h"
#include "kat/train/cpu_engine.h"
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
  KAT_CHECK(precision == "auto" || precision == "fp32" || precision == "bf16" || precision == "fp8",
            "--precision must be auto, fp32, bf16 or fp8, got '", precision, "'");
  KAT_CHECK(precision != "bf16" || parse_device(device) >= 0,
            "--precision bf16 is GPU only (--device cuda); the CPU computes in fp32 (--precision auto or fp32)");
}

std::unique_ptr<GpuRunner> inference_runner(const std::string& device, const KatModel& m, int max_batch,
                                            const std::string& precision) {
  check_precision(precision, device);
  const int dev = parse_device(device);
  if (dev < 0) return nullptr;
  auto gpu = std::make_unique<GpuRunner>(m.config(), dev, precision == "fp32" ? DType::F32 : DType::BF16,
                                         AdamWConfig{}, max_batch, /*training=*/false);
  if (precision == "fp8") gpu->enable_fp8();  // before the upload: the FP8 buffers are planned first
  gpu->upload_params(m.params.data());
  return gpu;
}

std::unique_ptr<Engine> inference_engine(const std::string& device, KatModel& m, int max_batch,
                                         const std::string& precision) {
  if (auto gpu = inference_runner(device, m, max_batch, precision)) return gpu;
  if (precision == "fp8") m.enable_fp8();  // the CPU emulation
  m.plan(max_batch);
  return std::make_unique<CpuEngine>(m);
}

double eval_crop_pct(double flag, const TrainConfig& checkpoint) {
  const double pct = flag > 0 ? flag : checkpoint.eval_crop_pct;
  KAT_CHECK(pct > 0 && pct <= 1, "--eval-crop-pct must be in (0, 1], got ", pct);
  return pct;
}

}  // namespace kat::cli
