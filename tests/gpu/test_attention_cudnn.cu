// cuDNN's fused attention (ops/cuda/attention_cudnn.h) on the GPU: the op against the CPU reference
// (op cases in op_cases/attention_cudnn.cuh, run by the op harness's driver), what it refuses, and
// the whole model with the attention switched to cuDNN (test_model_cuda.cu's check, bf16).
// Skipped, saying why, in a build without cuDNN or where the loaded cuDNN is too old.
// kat_gpu_tests --gtest_filter='CudnnAttention.*'
#include <cuda_runtime.h>

#include <cstdio>
#include <string>

#include "gpu_test_util.cuh"
#include "kat/core/error.h"
#include "op_cases/attention_cudnn.cuh"
#include "op_harness.cuh"
#include "ops/attention_backend.h"
#include "ops/cuda/attention_cudnn.h"

#define REQUIRE_CUDNN()                                                                               \
  do {                                                                                                \
    REQUIRE_GPU();                                                                                    \
    std::string why_;                                                                                 \
    if (!kat::cuda::cudnn_attention_available(&why_)) GTEST_SKIP() << "no cuDNN attention: " << why_; \
    std::printf("    %s\n", kat::cuda::cudnn_attention_version().c_str());                            \
  } while (0)

TEST(CudnnAttention, MatchesCpu) {
  REQUIRE_CUDNN();
  for (const auto& c : kat_op_harness::attention_cudnn_cases())
    for (const std::string& f : kat_op_harness::check_case(c)) ADD_FAILURE() << f;
}

TEST(CudnnAttention, RefusesWhatItCannotRun) {
  REQUIRE_CUDNN();
  using kat::DType;
  std::string why;
  // fp32 storage: cuDNN's fused attention is bf16 (or fp16) only.
  EXPECT_FALSE(kat::cuda::cudnn_attention_supported(2, 197, 192, 3, DType::F32, true, &why));
  EXPECT_NE(why.find("bf16"), std::string::npos) << why;
  EXPECT_THROW(kat::cuda::cudnn_attention_workspace_bytes(2, 197, 192, 3, DType::F32, true), kat::Error);
  // A shape outside the op's contract is an error, not a refusal.
  EXPECT_THROW(kat::cuda::cudnn_attention_supported(2, 197, 190, 3, DType::BF16, true), kat::Error);
  // Too little workspace: refused (nothing enqueued), with the sizes in the reason.
  ASSERT_TRUE(kat::cuda::cudnn_attention_supported(2, 197, 192, 3, DType::BF16, true, &why)) << why;
  const size_t need = kat::cuda::cudnn_attention_workspace_bytes(2, 197, 192, 3, DType::BF16, true);
  std::printf("    workspace for B 2 N 197 D 192 H 3 (forward + backward): %zu bytes\n", need);
  if (need > 0) {
    kat_gpu_test::DevBuf buf(2 * 197 * 576 * 2), grad(2 * 197 * 576 * 2);
    const kat::cuda::AttentionBackwardArgs a{.B = 2,
                                             .N = 197,
                                             .D = 192,
                                             .H = 3,
                                             .dtype = DType::BF16,
                                             .qkv = buf.p,
                                             .out = buf.p,
                                             .lse = buf.as<float>(),
                                             .dout = buf.p,
                                             .dqkv = grad.p,
                                             .workspace = buf.p};
    why.clear();
    EXPECT_FALSE(kat::cuda::cudnn_attention_backward(a, need - 1, nullptr, &why));
    EXPECT_NE(why.find("workspace"), std::string::npos) << why;
  }
  KAT_CUDA_CHECK(cudaDeviceSynchronize());
}
