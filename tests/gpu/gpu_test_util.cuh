// Support code of the GPU tests (kat_gpu_tests, GoogleTest: tests/gpu/test_*.cu, test_*.cpp): the
// framework include, REQUIRE_GPU, and the host helpers of gpu_host_util.cuh (which the op
// harness's perf mode, bench/op_bench.cu, uses without a framework).
// Every helper is inline: kat_gpu_tests compiles the test files into one binary.
#pragma once

#include <gtest/gtest.h>

#include "gpu_host_util.cuh"

// Skips the test (GTEST_SKIP) on a machine without a CUDA device.
#define REQUIRE_GPU() \
  if (!::kat_gpu_test::have_gpu()) GTEST_SKIP()
