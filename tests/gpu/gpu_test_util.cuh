// Support code shared by the GPU tests (tests/gpu/test_grkan_cuda.cu, test_ops_cuda.cu,
// test_model_cuda.cu): the test framework (GoogleTest, or a minimal gtest-compatible layer where
// gtest is missing) and host helpers (device buffers, bf16 conversion, uploads/downloads between
// host fp32 vectors and device fp32/bf16 storage, NaN poisoning, finiteness and error norms).
//
// Test framework:
//  - default: GoogleTest (the CMake target kat_gpu_tests, which links gtest_main);
//  - with KAT_GPU_TEST_NO_GTEST defined (or one of the older per-file names KAT_GRKAN_NO_GTEST,
//    KAT_OPS_NO_GTEST, KAT_MODEL_NO_GTEST, still used by bench/*_main.cu and bench/run_*_h200.sh),
//    for the GPU machine, which has no gtest: a minimal macro layer provides TEST, EXPECT_*,
//    ASSERT_TRUE, GTEST_SKIP and kat_gpu_test::mini::run_tests(). It defines no main(): the
//    including program does (bench/gpu_{ops,model}_check_main.cu; test_grkan_cuda.cu, which is
//    built stand-alone by bench/run_grkan_h200.sh, defines one itself).
// Every helper is inline: kat_gpu_tests compiles the three test files into one binary.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/grkan_cuda.h"  // Storage, storage_bytes

namespace kat_gpu_test {
// Whether `name` contains one of the comma-separated parts of `filter` (true when filter is
// null/empty). The KAT_TEST_FILTER of the mini runner; also KAT_BENCH_ONLY of gpu_ops_check_main.
inline bool matches_filter(const std::string& name, const char* filter) {
  if (!filter || !*filter) return true;
  std::stringstream ss(filter);
  std::string part;
  while (std::getline(ss, part, ','))
    if (!part.empty() && name.find(part) != std::string::npos) return true;
  return false;
}
}  // namespace kat_gpu_test

#if !defined(KAT_GPU_TEST_NO_GTEST) && \
    (defined(KAT_GRKAN_NO_GTEST) || defined(KAT_OPS_NO_GTEST) || defined(KAT_MODEL_NO_GTEST))
#define KAT_GPU_TEST_NO_GTEST 1
#endif

#if !defined(KAT_GPU_TEST_NO_GTEST)
#include <gtest/gtest.h>
#else
// ---- minimal gtest-compatible layer (only what the GPU tests use) ------------------------------
#include <chrono>
#include <exception>
namespace kat_gpu_test::mini {
struct Test {
  const char* name;
  void (*fn)();
};
inline std::vector<Test>& registry() {
  static std::vector<Test> r;
  return r;
}
inline int& failures() {
  static int f = 0;
  return f;
}
inline bool& skipped() {
  static bool s = false;
  return s;
}
struct Fail {
  std::ostringstream os;
  Fail(const char* file, int line, const std::string& what) {
    os << file << ":" << line << ": Failure: " << what << " ";
  }
  template <typename T>
  Fail& operator<<(const T& v) {
    os << v;
    return *this;
  }
  ~Fail() {
    ++failures();
    std::fprintf(stderr, "%s\n", os.str().c_str());
  }
};
struct Void {
  void operator=(const Fail&) {}
};
struct Reg {
  Reg(const char* n, void (*f)()) { registry().push_back({n, f}); }
};
template <typename A, typename B>
std::string cmp_str(const char* ea, const char* op, const char* eb, const A& a, const B& b) {
  std::ostringstream os;
  os << ea << " " << op << " " << eb << " (" << a << " vs " << b << ")";
  return os.str();
}
// Runs the registered tests whose name contains one of the comma-separated parts of `filter`
// (all when null/empty; the programs pass $KAT_TEST_FILTER). print_seconds: append each test's
// wall time to its result line (the whole-model checks, which take seconds to minutes).
// Returns the number of failed tests.
inline int run_tests(const char* filter, bool print_seconds = false) {
  int failed_tests = 0, skipped_tests = 0, ran = 0;
  for (const auto& t : registry()) {
    if (!matches_filter(t.name, filter)) continue;
    ++ran;
    const int before = failures();
    skipped() = false;
    std::printf("[ RUN      ] %s\n", t.name);
    std::fflush(stdout);
    const auto t0 = std::chrono::steady_clock::now();
    try {
      t.fn();
    } catch (const std::exception& e) {
      Fail(__FILE__, __LINE__, "uncaught exception: ") << e.what();
    }
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const bool ok = failures() == before;
    if (!ok) ++failed_tests;
    if (skipped()) ++skipped_tests;
    const char* result = !ok ? " FAILED " : (skipped() ? " SKIPPED" : "      OK");
    if (print_seconds)
      std::printf("[ %s ] %s (%.1f s)\n", result, t.name, sec);
    else
      std::printf("[ %s ] %s\n", result, t.name);
    std::fflush(stdout);
  }
  std::printf("%d tests, %d failed, %d skipped\n", ran, failed_tests, skipped_tests);
  return failed_tests;
}
}  // namespace kat_gpu_test::mini
#define TEST(suite, name)                                                                          \
  static void suite##_##name##_body();                                                             \
  static ::kat_gpu_test::mini::Reg suite##_##name##_reg(#suite "." #name, &suite##_##name##_body); \
  static void suite##_##name##_body()
#define EXPECT_TRUE(c) \
  if (c) {             \
  } else               \
    ::kat_gpu_test::mini::Fail(__FILE__, __LINE__, "EXPECT_TRUE(" #c ")")
#define ASSERT_TRUE(c)                    \
  if (c) {                                \
  } else                                  \
    return ::kat_gpu_test::mini::Void() = \
               ::kat_gpu_test::mini::Fail(__FILE__, __LINE__, "ASSERT_TRUE(" #c ")")
#define EXPECT_FALSE(c) EXPECT_TRUE(!(c))
#define EXPECT_LE(a, b) \
  if ((a) <= (b)) {     \
  } else                \
    ::kat_gpu_test::mini::Fail(__FILE__, __LINE__, ::kat_gpu_test::mini::cmp_str(#a, "<=", #b, (a), (b)))
#define EXPECT_EQ(a, b) \
  if ((a) == (b)) {     \
  } else                \
    ::kat_gpu_test::mini::Fail(__FILE__, __LINE__, ::kat_gpu_test::mini::cmp_str(#a, "==", #b, (a), (b)))
   // As gtest: an exception of another type, or none, is a failure, and the test goes on.
#define EXPECT_THROW(stmt, exc)                                                                            \
  do {                                                                                                     \
    bool kat_thrown_ = false;                                                                              \
    try {                                                                                                  \
      stmt;                                                                                                \
    } catch (const exc&) {                                                                                 \
      kat_thrown_ = true;                                                                                  \
    } catch (...) {                                                                                        \
    }                                                                                                      \
    if (!kat_thrown_) ::kat_gpu_test::mini::Fail(__FILE__, __LINE__, "EXPECT_THROW(" #stmt ", " #exc ")"); \
  } while (0)
#define GTEST_SKIP() return (void)(::kat_gpu_test::mini::skipped() = true)
#endif

namespace kat_gpu_test {

using kat::cuda::Storage;

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
inline float round_bf16(float f) {
  return bf16_bits_to_f32(f32_to_bf16_bits(f));
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
// Always a real allocation (at least 1 byte, so never null); `bytes` is the size asked for.
struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DevBuf(size_t n) : bytes(n) { KAT_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1))); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  template <typename T>
  T* as(size_t byte_offset = 0) const {
    return reinterpret_cast<T*>(static_cast<char*>(p) + byte_offset);
  }
};

// Device (storage st) -> host float. A zero-size copy is skipped.
inline std::vector<float> download_storage(const void* d, size_t n, Storage st) {
  std::vector<float> out(n);
  if (n == 0) return out;
  if (st == Storage::F32) {
    KAT_CUDA_CHECK(cudaMemcpy(out.data(), d, n * 4, cudaMemcpyDeviceToHost));
  } else {
    std::vector<uint16_t> h(n);
    KAT_CUDA_CHECK(cudaMemcpy(h.data(), d, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; ++i) out[i] = bf16_bits_to_f32(h[i]);
  }
  return out;
}
// Host float (n values) -> device storage st (bf16: each value rounded to nearest even; the host
// values are left as they are). A zero-size copy is skipped.
inline void upload_storage(void* d, const float* v, size_t n, Storage st) {
  if (n == 0) return;
  if (st == Storage::F32) {
    KAT_CUDA_CHECK(cudaMemcpy(d, v, n * 4, cudaMemcpyHostToDevice));
  } else {
    std::vector<uint16_t> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = f32_to_bf16_bits(v[i]);
    KAT_CUDA_CHECK(cudaMemcpy(d, h.data(), n * 2, cudaMemcpyHostToDevice));
  }
}
// Host float -> device storage st (bf16: rounded; `values` is rounded in place so the CPU sees the
// same). Rounding first and then converting uploads the same bits as converting once: the bf16
// conversion of a rounded value returns its bits unchanged (its low 16 bits are zero, so adding
// at most 0x8000 carries nothing into the kept half).
inline void upload_rounded(void* d, std::vector<float>& values, Storage st) {
  if (st == Storage::BF16)
    for (auto& v : values) v = round_bf16(v);
  upload_storage(d, values.data(), values.size(), st);
}

inline std::vector<float> download_f32(const void* d, size_t n) {
  return download_storage(d, n, Storage::F32);
}
inline void upload_f32(void* d, const std::vector<float>& v) {
  upload_storage(d, v.data(), v.size(), Storage::F32);
}

// Storage-typed device tensor at an optional element offset (misalignment tests).
struct DevTensor {
  Storage st;
  size_t n, offset;
  DevBuf buf;
  DevTensor(Storage s, size_t count, size_t off = 0)
      : st(s), n(count), offset(off), buf((count + off) * kat::cuda::storage_bytes(s) + 16) {}
  void* ptr() const { return buf.as<char>(offset * kat::cuda::storage_bytes(st)); }
  void upload(const std::vector<float>& v) const { upload_storage(ptr(), v.data(), n, st); }
  std::vector<float> download() const { return download_storage(ptr(), n, st); }
  void poison() const {  // all-ones bytes: NaN in fp32 and in bf16
    KAT_CUDA_CHECK(cudaMemset(ptr(), 0xff, n * kat::cuda::storage_bytes(st)));
  }
};

}  // namespace kat_gpu_test

#define REQUIRE_GPU() \
  if (!::kat_gpu_test::have_gpu()) GTEST_SKIP()
