#include "device.h"

#include "kat/core/error.h"
#include "kat/train/cpu_engine.h"
#include "kat/train/optim.h"

namespace kat::cli {

std::unique_ptr<GpuRunner> inference_runner(const std::string& device, const KatModel& m, int max_batch) {
  const int dev = parse_device(device);
  if (dev < 0) return nullptr;
  auto gpu =
      std::make_unique<GpuRunner>(m.config(), dev, DType::BF16, AdamWConfig{}, max_batch, /*training=*/false);
  gpu->upload_params(m.params.data());
  return gpu;
}

std::unique_ptr<Engine> inference_engine(const std::string& device, KatModel& m, int max_batch) {
  if (auto gpu = inference_runner(device, m, max_batch)) return gpu;
  m.plan(max_batch);
  return std::make_unique<CpuEngine>(m);
}

double eval_crop_pct(double flag, const TrainConfig& checkpoint) {
  const double pct = flag > 0 ? flag : checkpoint.eval_crop_pct;
  KAT_CHECK(pct > 0 && pct <= 1, "--eval-crop-pct must be in (0, 1], got ", pct);
  return pct;
}

}  // namespace kat::cli
