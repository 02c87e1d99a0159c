// LayerNorm on CUDA. Contract and shared shape check: ops/layernorm.h; CPU: ops/cpu/layernorm.h;
// conventions: ops/cuda/stream.h; measurements: bench/records/OPS_CUDA.md.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ops/cuda/stream.h"
#include "ops/layernorm.h"

namespace kat::cuda {

// Widest row the CUDA kernels take (rows are register-resident).
inline constexpr int kLayerNormMaxC = 4096;

// y = (x - mean) * rstd * gamma + beta over rows of C (1 <= C <= 4096); mean/rstd (rows) fp32
// saved. y may alias x.
struct LayerNormForwardArgs {
  int64_t rows = 0;
  int C = 0;
  float eps = 0;
  DType dtype = DType::F32;      // of x and y
  const void* x = nullptr;       // (rows, C)
  const float* gamma = nullptr;  // (C)
  const float* beta = nullptr;   // (C)
  void* y = nullptr;             // (rows, C)
  float* mean = nullptr;         // (rows)
  float* rstd = nullptr;         // (rows)
};
void layernorm_forward(const LayerNormForwardArgs& a, cudaStream_t stream);

// Bytes of device workspace layernorm_backward needs (depends on the device's SM count; any dtype
// or alignment). 4-byte alignment suffices; contents need not be initialised.
std::size_t layernorm_backward_workspace_bytes(int64_t rows, int C);

// dx_acc (rows, C) += dL/dx; dgamma, dbeta (C, fp32) += (deterministic two-stage reduction:
// per-block partial sums in `workspace`, then a fixed-order sum over blocks). dx_acc must not alias
// x or dy.
struct LayerNormBackwardArgs {
  int64_t rows = 0;
  int C = 0;
  DType dtype = DType::F32;      // of x, dy, dx_acc
  const void* x = nullptr;       // (rows, C), the forward's input
  const float* gamma = nullptr;  // (C)
  const float* mean = nullptr;   // (rows), saved by the forward
  const float* rstd = nullptr;   // (rows), saved by the forward
  const void* dy = nullptr;      // (rows, C)
  void* dx_acc = nullptr;        // (rows, C), +=
  float* dgamma = nullptr;       // (C), +=
  float* dbeta = nullptr;        // (C), +=
  void* workspace = nullptr;     // layernorm_backward_workspace_bytes(rows, C)
};
void layernorm_backward(const LayerNormBackwardArgs& a, cudaStream_t stream);

}  // namespace kat::cuda
