// Perf mode of the cross-backend op harness (tests/gpu/op_harness.cuh): every case of the op table
// (or those whose "family name" contains one of the filter's comma-separated parts), the CUDA op
// alone timed with CUDA events, printed as time per call, GB/s and/or TFLOP/s against the
// ceilings of an H100 (op_harness.cuh: ~3.0 TB/s copy, ~750 TFLOP/s bf16 GEMM).
// `check` runs the harness's checks instead (the same driver as kat_gpu_tests
// --gtest_filter='OpHarness.*', for a machine without GoogleTest).
//
// usage: op_bench [perf|check] [filter]        e.g.  op_bench perf "layernorm,grkan rows 25216"
// Exit code: 0 unless a check failed or a CUDA error occurred.
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "../tests/gpu/op_cases/attention.cuh"
#include "../tests/gpu/op_cases/attention_cudnn.cuh"
#include "../tests/gpu/op_cases/cross_entropy.cuh"
#include "../tests/gpu/op_cases/elementwise.cuh"
#include "../tests/gpu/op_cases/fp8.cuh"
#include "../tests/gpu/op_cases/gemm.cuh"
#include "../tests/gpu/op_cases/grkan.cuh"
#include "../tests/gpu/op_cases/layernorm.cuh"
#include "../tests/gpu/op_cases/optim.cuh"
#include "../tests/gpu/op_harness.cuh"

namespace {

bool matches(const std::string& name, const char* filter) {
  if (!filter || !*filter) return true;
  std::stringstream ss(filter);
  std::string part;
  while (std::getline(ss, part, ','))
    if (!part.empty() && name.find(part) != std::string::npos) return true;
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace kat_op_harness;
  const std::string mode = argc > 1 ? argv[1] : "perf";
  const char* filter = argc > 2 ? argv[2] : nullptr;
  if (mode != "perf" && mode != "check") {
    std::fprintf(stderr, "usage: %s [perf|check] [filter]\n", argv[0]);
    return 2;
  }
  std::vector<OpCase> cases;
  for (auto* family :
       {&layernorm_cases, &elementwise_cases, &cross_entropy_cases, &optim_cases, &grkan_cases, &gemm_cases,
        &fp8_cases, &attention_cases, &attention_cudnn_cases, &attention_cudnn_perf_cases})
    for (auto& c : (*family)()) cases.push_back(std::move(c));
  cudaDeviceProp prop{};
  KAT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (%d SMs)\n", prop.name, prop.multiProcessorCount);
  int failed = 0, ran = 0;
  for (const auto& c : cases) {
    if (!matches(c.family + " " + c.name, filter)) continue;
    ++ran;
    try {
      if (mode == "perf") {
        time_case(c);
      } else {
        const auto failures = check_case(c);
        if (!failures.empty()) ++failed;
      }
    } catch (const std::exception& e) {
      std::printf("%s %s: %s\n", c.family.c_str(), c.name.c_str(), e.what());
      ++failed;
    }
  }
  std::printf("%d cases, %d failed\n", ran, failed);
  return failed == 0 ? 0 : 1;
}
