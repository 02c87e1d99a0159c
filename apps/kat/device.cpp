#include "device.h"

#include "train/optim.h"

namespace kat::cli {

std::unique_ptr<GpuRunner> inference_runner(const std::string& device, const KatModel& m, int max_batch) {
  const int dev = parse_device(device);
  if (dev < 0) return nullptr;
  auto gpu = std::make_unique<GpuRunner>(m.config(), dev, true, AdamWConfig{}, max_batch, /*training=*/false);
  gpu->upload_params(m.params.data());
  return gpu;
}

}  // namespace kat::cli
