// Support code of the GPU tests written against a test framework (tests/gpu/test_model_cuda.cu,
// test_op_harness.cu): the framework (GoogleTest, or a minimal gtest-compatible layer where gtest
// is missing) and the host helpers of gpu_host_util.cuh.
//
// Test framework:
//  - default: GoogleTest (the CMake target kat_gpu_tests, which links gtest_main);
//  - with KAT_GPU_TEST_NO_GTEST defined (or KAT_MODEL_NO_GTEST, used by
//    bench/gpu_model_check_main.cu): a minimal macro layer provides TEST, EXPECT_*, ASSERT_TRUE,
//    GTEST_SKIP and kat_gpu_test::mini::run_tests(). It defines no main(): the including program
//    does. (The op checks need no framework: bench/op_bench.cu runs them stand-alone.)
// Every helper is inline: kat_gpu_tests compiles the test files into one binary.
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

#include "gpu_host_util.cuh"

namespace kat_gpu_test {
// Whether `name` contains one of the comma-separated parts of `filter` (true when filter is
// null/empty). The KAT_TEST_FILTER of the mini runner; 
inline bool matches_filter(const std::string& name, const char* filter) {
  if (!filter || !*filter) return true;
  std::stringstream ss(filter);
  std::string part;
  while (std::getline(ss, part, ','))
    if (!part.empty() && name.find(part) != std::string::npos) return true;
  return false;
}
}  // namespace kat_gpu_test

#if !defined(KAT_GPU_TEST_NO_GTEST) && defined(KAT_MODEL_NO_GTEST)
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

#define REQUIRE_GPU() \
  if (!::kat_gpu_test::have_gpu()) GTEST_SKIP()
