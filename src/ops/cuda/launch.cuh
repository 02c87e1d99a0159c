// Host-side launch helpers shared by the CUDA op files (ops/cuda/*.cu): the device's
// multiprocessor count, the programmatic-dependent-launch (PDL) launcher, pointer-alignment tests
// for the 16-byte vector paths, and the dtype / vector-width dispatch.
//
// PDL: kernels launched with launch() may be scheduled while the preceding kernel of the stream is
// still running; each such kernel calls vecio::griddep_wait() before its first global memory access
// (ops/cuda/vec_io.cuh), which waits for the preceding grid's completion and memory flush, so
// stream order holds for all data; only the launch latency overlaps.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kat/core/dtype.h"
#include "kat/core/error.h"
#include "ops/cuda/cuda_check.h"

namespace kat::cuda::detail {

// Multiprocessors of the current device (cached per device: grids that depend on it are sized on
// every call).
inline int sm_count() {
  static std::atomic<int> cache[64] = {};
  int dev = 0;
  KAT_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev >= 0 && dev < 64) {
    const int c = cache[dev].load(std::memory_order_relaxed);
    if (c > 0) return c;
  }
  int n = 0;
  KAT_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  KAT_CHECK(n > 0, "CUDA device ", dev, " reports ", n, " multiprocessors");
  if (dev >= 0 && dev < 64) cache[dev].store(n, std::memory_order_relaxed);
  return n;
}

// Launch with programmatic stream serialization (see the top of this file).
template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, int block, std::size_t smem, cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(static_cast<unsigned>(block));
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  KAT_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...));
}

// Whether p is 16-byte aligned (the vector paths' requirement).
inline bool al16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
// Whether p is null or a-byte aligned (optional pointers).
inline bool al(const void* p, uintptr_t a) {
  return p == nullptr || (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0;
}

// Elements of one 16-byte vector: 4 fp32 or 8 bf16.
inline constexpr int vec_width(DType t) { return t == DType::F32 ? 4 : 8; }

inline void check_dtype(DType t, const char* where) {
  KAT_CHECK(t == DType::F32 || t == DType::BF16, where, ": element type ", dtype_name(t),
            " is not supported here (f32 or bf16; f16 only by the GR-KAN op)");
}

// Calls fn(integral_constant<DType>, integral_constant<int VEC>): VEC = vec_width(t) when `vec`
// (the 16-byte path), else 1 (scalar fallback). F32 and BF16 only (F16 is the GR-KAN op's alone).
template <typename Fn>
void dispatch_dtype_vec(DType t, bool vec, Fn&& fn) {
  check_dtype(t, "dispatch_dtype_vec");
  if (t == DType::F32) {
    if (vec)
      fn(std::integral_constant<DType, DType::F32>{}, std::integral_constant<int, 4>{});
    else
      fn(std::integral_constant<DType, DType::F32>{}, std::integral_constant<int, 1>{});
  } else {
    if (vec)
      fn(std::integral_constant<DType, DType::BF16>{}, std::integral_constant<int, 8>{});
    else
      fn(std::integral_constant<DType, DType::BF16>{}, std::integral_constant<int, 1>{});
  }
}

// Blocks of `threads` covering n items (at least 1, at most cap): grid of the grid-stride loops.
inline unsigned grid_for(int64_t n, int threads, int64_t cap) {
  return unsigned(std::clamp<int64_t>((n + threads - 1) / threads, 1, cap));
}

}  // namespace kat::cuda::detail
