#include "data/cuda/ycbcr_to_rgb.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "ops/cuda/cuda_check.h"

namespace kat::data::cuda {

namespace {

// Jobs per launch, passed by value: 48 x 64 bytes stays within the 4 KB of kernel parameters every
// CUDA version takes.
constexpr int kJobsPerLaunch = 48;
struct JobChunk {
  YcbcrJob job[kJobsPerLaunch];
};

constexpr int kBlockX = 32, kBlockY = 8;

// blockIdx.z: the job; x, y: a pixel of the largest image of the chunk (threads past an image's
// edge do nothing).
__global__ void __launch_bounds__(kBlockX* kBlockY) ycbcr_to_rgb_kernel(JobChunk chunk) {
  const YcbcrJob& j = chunk.job[blockIdx.z];
  const int x = int(blockIdx.x) * kBlockX + int(threadIdx.x);
  const int y = int(blockIdx.y) * kBlockY + int(threadIdx.y);
  if (x >= j.planes.width || y >= j.planes.height) return;
  uint8_t rgb[3];
  ycbcr::pixel(j.planes, x, y, rgb);
  uint8_t* out = j.rgb + (size_t(y) * size_t(j.planes.width) + size_t(x)) * 3;
  out[0] = rgb[0];
  out[1] = rgb[1];
  out[2] = rgb[2];
}

}  // namespace

void ycbcr_to_rgb(const YcbcrJob* jobs, int n, cudaStream_t stream) {
  for (int first = 0; first < n; first += kJobsPerLaunch) {
    const int m = std::min(kJobsPerLaunch, n - first);
    JobChunk chunk{};
    int max_w = 0, max_h = 0;
    for (int i = 0; i < m; ++i) {
      chunk.job[i] = jobs[first + i];
      max_w = std::max(max_w, jobs[first + i].planes.width);
      max_h = std::max(max_h, jobs[first + i].planes.height);
    }
    if (max_w == 0 || max_h == 0) continue;
    const dim3 grid(unsigned((max_w + kBlockX - 1) / kBlockX), unsigned((max_h + kBlockY - 1) / kBlockY),
                    unsigned(m));
    ycbcr_to_rgb_kernel<<<grid, dim3(kBlockX, kBlockY), 0, stream>>>(chunk);
    KAT_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace kat::data::cuda
