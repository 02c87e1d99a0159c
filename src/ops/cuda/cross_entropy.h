// Softmax cross-entropy with soft targets and label smoothing on CUDA. Contract and shared
// argument check: ops/cross_entropy.h; CPU: ops/cpu/cross_entropy.h (which returns the mean and
// does its math in double); conventions: ops/cuda/stream.h.
#pragma once
#include <cstdint>

#include "ops/cross_entropy.h"
#include "ops/cuda/stream.h"

namespace kat::cuda {

struct SoftmaxXentArgs {
  int64_t B = 0;
  int K = 0;
  DType dtype = DType::F32;       // of logits and dlogits
  const void* logits = nullptr;   // (B, K)
  const float* target = nullptr;  // (B, K) fp32
  float label_smoothing = 0;      // in [0, 1)
  void* dlogits = nullptr;        // (B, K) = (softmax(z) - t) / B, overwritten; may be null; may alias logits
  float* row_loss = nullptr;      // (B) fp32, required
  float* loss = nullptr;  // one fp32, the mean of the row losses summed in a fixed order in double; may be null
};
void softmax_xent(const SoftmaxXentArgs& a, cudaStream_t stream);

}  // namespace kat::cuda
