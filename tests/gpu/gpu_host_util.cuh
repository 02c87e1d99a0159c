// Host helpers shared by the GPU tests and the op harness (no test framework): device buffers, bf16
// conversion, uploads/downloads between host fp32 vectors and device fp32/bf16 tensors, NaN
// poisoning, finiteness and error norms. Every helper is inline.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kat/core/dtype.h"
#include "kat/core/fp16.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_memory.h"

namespace kat_gpu_test {

using kat::DType;

inline bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// ---- host helpers ------------------------------------------------------------------------------
inline uint16_t f32_to_bf16_bits(float f) {  // round to nearest even (finite inputs)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_bits_to_f32(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float round_bf16(float f) { return bf16_bits_to_f32(f32_to_bf16_bits(f)); }
// f rounded to storage st and widened back (F16: the GR-KAN op's IEEE half, kat/core/fp16.h).
inline float round_to(DType st, float f) {
  return st == DType::F32 ? f : st == DType::BF16 ? round_bf16(f) : kat::fp16_to_float(kat::float_to_fp16(f));
}

inline uint64_t fresh_seed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

inline bool all_finite(const std::vector<float>& v) {
  for (float f : v)
    if (!std::isfinite(f)) return false;
  return true;
}

// Norm-wise relative error ||got - ref|| / ||ref|| (||got - ref|| when ref is all zeros), summed
// in double over n elements.
template <typename A, typename B>
double rel_err(const A* got, const B* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(got[i]) - static_cast<double>(ref[i]);
    num += d * d;
    den += static_cast<double>(ref[i]) * static_cast<double>(ref[i]);
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}
// The same over ref.size() elements.
template <typename A, typename B>
double rel_err(const std::vector<A>& got, const std::vector<B>& ref) {
  return rel_err(got.data(), ref.data(), ref.size());
}

// ---- device memory -----------------------------------------------------------------------------
// `bytes` of device memory (a DeviceBuffer), always a real allocation (at least 1 byte, so never
// null); `bytes` is the size asked for.
struct DevBuf {
  kat::cuda::DeviceBuffer<unsigned char> mem;
  void* p = nullptr;
  size_t bytes = 0;
  explicit DevBuf(size_t n) : mem(std::max<size_t>(n, 1)), p(mem.data()), bytes(n) {}
  template <typename T>
  T* as(size_t byte_offset = 0) const {
    return reinterpret_cast<T*>(static_cast<char*>(p) + byte_offset);
  }
};

// Device (storage st) -> host float. A zero-size copy is skipped.
inline std::vector<float> download_storage(const void* d, size_t n, DType st) {
  std::vector<float> out(n);
  if (n == 0) return out;
  if (st == DType::F32) {
    KAT_CUDA_CHECK(cudaMemcpy(out.data(), d, n * 4, cudaMemcpyDeviceToHost));
  } else {
    std::vector<uint16_t> h(n);
    KAT_CUDA_CHECK(cudaMemcpy(h.data(), d, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; ++i) out[i] = st == DType::BF16 ? bf16_bits_to_f32(h[i]) : kat::fp16_to_float(h[i]);
  }
  return out;
}
// Host float (n values) -> device storage st (bf16: each value rounded to nearest even; the host
// values are left as they are). A zero-size copy is skipped.
inline void upload_storage(void* d, const float* v, size_t n, DType st) {
  if (n == 0) return;
  if (st == DType::F32) {
    KAT_CUDA_CHECK(cudaMemcpy(d, v, n * 4, cudaMemcpyHostToDevice));
  } else {
    std::vector<uint16_t> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = st == DType::BF16 ? f32_to_bf16_bits(v[i]) : kat::float_to_fp16(v[i]);
    KAT_CUDA_CHECK(cudaMemcpy(d, h.data(), n * 2, cudaMemcpyHostToDevice));
  }
}
// Host float -> device storage st (bf16: rounded; `values` is rounded in place so the CPU sees the
// same). Rounding first and then converting uploads the same bits as converting once: the bf16
// conversion of a rounded value returns its bits unchanged (its low 16 bits are zero, so adding
// at most 0x8000 carries nothing into the kept half).
inline void upload_rounded(void* d, std::vector<float>& values, DType st) {
  if (st != DType::F32)
    for (auto& v : values) v = round_to(st, v);
  upload_storage(d, values.data(), values.size(), st);
}

inline std::vector<float> download_f32(const void* d, size_t n) { return download_storage(d, n, DType::F32); }
inline void upload_f32(void* d, const std::vector<float>& v) { upload_storage(d, v.data(), v.size(), DType::F32); }

// DType-typed device tensor at an optional element offset (misalignment tests).
struct DevTensor {
  DType st;
  size_t n, offset;
  DevBuf buf;
  DevTensor(DType s, size_t count, size_t off = 0)
      : st(s), n(count), offset(off), buf((count + off) * kat::dtype_size(s) + 16) {}
  void* ptr() const { return buf.as<char>(offset * kat::dtype_size(st)); }
  void upload(const std::vector<float>& v) const { upload_storage(ptr(), v.data(), n, st); }
  std::vector<float> download() const { return download_storage(ptr(), n, st); }
  void poison() const {  // all-ones bytes: NaN in fp32, bf16 and fp16
    KAT_CUDA_CHECK(cudaMemset(ptr(), 0xff, n * kat::dtype_size(st)));
  }
};

}  // namespace kat_gpu_test
