// DType: the element type of a tensor stored by the engine, one enum for every backend.
// Activations and their gradients are stored as F32 or BF16 (bfloat16, round-to-nearest-even from
// fp32, see core/bf16.h); all arithmetic is fp32 whatever the storage. Parameters, master weights,
// optimizer moments and coefficient gradients are always F32.
// F16 (IEEE half, core/fp16.h) is accepted by the GR-KAN op alone (both backends), for PyTorch
// users whose activations are fp16 (kat.torch); the engine never stores F16 and the other ops
// reject it (ops/cuda/launch.cuh: check_dtype, dispatch_dtype_vec).
// Plain C++ (no CUDA header): usable from .cpp and .cu files alike.
#pragma once
#include <cstddef>
#include <string_view>

namespace kat {

enum class DType { F32, BF16, F16 };

// Bytes per element.
inline constexpr std::size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }

// Lower-case name as printed in logs and accepted on the command line ("f32", "bf16", "f16").
inline constexpr std::string_view dtype_name(DType t) {
  return t == DType::F32 ? "f32" : t == DType::BF16 ? "bf16" : "f16";
}

// Inverse of dtype_name; false (t unchanged) for an unknown name. Also accepts "fp32", "fp16".
inline constexpr bool parse_dtype(std::string_view s, DType& t) {
  if (s == "f32" || s == "fp32") {
    t = DType::F32;
    return true;
  }
  if (s == "bf16") {
    t = DType::BF16;
    return true;
  }
  if (s == "f16" || s == "fp16") {
    t = DType::F16;
    return true;
  }
  return false;
}

}  // namespace kat
