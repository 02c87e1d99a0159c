// KAT_CUDA_CHECK(expr): evaluate a CUDA runtime call and throw std::runtime_error naming the
// call, file:line and cudaGetErrorString when it does not return cudaSuccess.
// KAT_CUDA_CHECK_LAUNCH(): the same for the last kernel launch (cudaGetLastError).
// Plain C++ plus the CUDA runtime header: safe to include from .cu and .cpp files alike
// (no fmt/spdlog).
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace kat::cuda::detail {
[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA error at ") + file + ":" + std::to_string(line) + ": " + expr +
                           " -> " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}
}  // namespace kat::cuda::detail

#define KAT_CUDA_CHECK(expr)                                                           \
  do {                                                                                 \
    const cudaError_t kat_cuda_err_ = (expr);                                          \
    if (kat_cuda_err_ != cudaSuccess)                                                  \
      ::kat::cuda::detail::throw_cuda_error(kat_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define KAT_CUDA_CHECK_LAUNCH() KAT_CUDA_CHECK(cudaGetLastError())
