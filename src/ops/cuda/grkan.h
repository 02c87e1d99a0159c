// GR-KAN (group-rational activation) on CUDA: forward and backward at memory bandwidth.
// Contract, math and the shared shape check: ops/grkan.h; CPU: ops/cpu/grkan.h.
//   x, y, dy, dx: (rows, D) channels last, device memory, DType element type (F32, BF16 or F16:
//   the engine uses F32/BF16, the Python op (kat.torch) all three);
//   a: (An, m+1) fp32, An = 1 (shared numerator) or G;  b: (G, n) fp32;  all math in fp32.
//   forward:  y = F(x)                       (y must not alias x)
//   backward: dx overwritten (DType, may alias dy); da, db fp32 ACCUMULATED (+=), or overwritten
//   with GrkanBackwardArgs::accumulate = false (no zero-fill launch before the call).
// The coefficient reduction is deterministic (bitwise identical across runs on one device):
// stage 1 writes per-block partial sums to `workspace` (plain stores, no atomics), stage 2 (one
// small kernel) sums each column of that table in a fixed order and adds it to da/db. The grid
// size depends only on the shape and the device's multiprocessor count.
// Kernels are launched with programmatic dependent launch (PDL) and wait for the preceding
// kernel's completion before touching memory, so stream order holds as usual; only their launch
// latency overlaps the previous kernel's tail.
// Degrees (5, 4) (the checkpoints' default) run a specialised kernel; any other degrees up to
// (8, 8) run a generic one. Invalid shapes throw kat::Error, CUDA failures std::runtime_error.
// Everything is enqueued on `stream`; nothing synchronises.
#pragma once
#include <cstddef>

#include "kat/ops/grkan.h"
#include "ops/cuda/stream.h"

namespace kat::cuda {

// y = F(x).
void grkan_forward(const kat::ops::GrkanShape& s, DType st, const void* x, const float* a, const float* b, void* y,
                   cudaStream_t stream);

// Bytes of device workspace grkan_backward needs for this shape (any dtype, any alignment).
// Depends on the current device's multiprocessor count. Scratch: its content does not matter.
std::size_t grkan_backward_workspace_bytes(const kat::ops::GrkanShape& s);

// dx = dL/dx (overwritten), da += dL/da, db += dL/db. dx_colsum (D floats, optional) += the column
// sums of dx over the rows, i.e. the bias gradient of the linear layer whose output x is (fc1 in
// the model): fused into the coefficient reduction for degrees (5, 4) with 16-byte vectors (sums
// of the fp32 dx values before their dtype rounding; deterministic, same two stages), else a
// separate column-sum pass over the stored dx.
struct GrkanBackwardArgs {
  kat::ops::GrkanShape shape;
  DType dtype = DType::F32;    // of x, dy, dx
  const void* x = nullptr;     // (rows, D), the forward's input
  const void* dy = nullptr;    // (rows, D)
  const float* a = nullptr;    // (An, m+1)
  const float* b = nullptr;    // (G, n)
  void* dx = nullptr;          // (rows, D), overwritten; may alias dy
  float* da = nullptr;         // (An, m+1), +=
  float* db = nullptr;         // (G, n), +=
  void* workspace = nullptr;   // grkan_backward_workspace_bytes(shape)
  float* dx_colsum = nullptr;  // (D), +=; optional
  bool accumulate = true;      // false: da, db (and dx_colsum) are overwritten (=), not added to
};
void grkan_backward(const GrkanBackwardArgs& args, cudaStream_t stream);

// How a call is launched (for benchmarks and tests): elements per thread access (8 bf16 / 4 fp32
// for the 16-byte path, 1 for the scalar fallback), blocks of stage 1, row slots per pass.
struct GrkanLaunchInfo {
  int vec = 1;
  int blocks = 0;
  int threads = 0;
  long long row_slots = 0;
  bool specialised = false;  // degrees (5, 4) kernel
};
GrkanLaunchInfo grkan_launch_info(const kat::ops::GrkanShape& s, DType st, bool backward, bool aligned16);

}  // namespace kat::cuda
