// The cross-backend op checks: every case of the op table (tests/gpu/op_cases/<family>.cuh, driver in
// op_harness.cuh) run by one driver, one test per op family
// (kat_gpu_tests --gtest_filter='OpHarness.*'), plus the argument checks of the CUDA entry points
// (OpArgs.*). Perf mode: bench/op_bench.cu.
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "gpu_test_util.cuh"
#include "kat/core/error.h"
#include "op_cases/attention.cuh"
#include "op_cases/cross_entropy.cuh"
#include "op_cases/elementwise.cuh"
#include "op_cases/fp8.cuh"
#include "op_cases/gemm.cuh"
#include "op_cases/grkan.cuh"
#include "op_cases/layernorm.cuh"
#include "op_cases/optim.cuh"
#include "op_harness.cuh"

namespace {

void run_cases(const std::vector<kat_op_harness::OpCase>& cases) {
  for (const auto& c : cases)
    for (const std::string& f : kat_op_harness::check_case(c)) ADD_FAILURE() << f;
}

}  // namespace

TEST(OpHarness, LayerNorm) {
  REQUIRE_GPU();
  run_cases(kat_op_harness::layernorm_cases());
}
TEST(OpHarness, Elementwise) {
  REQUIRE_GPU();
  run_cases(kat_op_harness::elementwise_cases());
}
TEST(OpHarness, CrossEntropy) {
  REQUIRE_GPU();
  run_cases(kat_op_harness::cross_entropy_cases());
}
TEST(OpHarness, Optim) {
  REQUIRE_GPU();
  run_cases(kat_op_harness::optim_cases());
}
TEST(OpHarness, Grkan) {
  REQUIRE_GPU();
  run_cases(kat_op_harness::grkan_cases());
}
TEST(OpHarness, Gemm) {
  REQUIRE_GPU();
  run_cases(kat_op_harness::gemm_cases());
}
TEST(OpHarness, Attention) {
  REQUIRE_GPU();
  run_cases(kat_op_harness::attention_cases());
}
// FP8 casts, scales and GEMMs (tests/gpu/op_cases/fp8.cuh). The GEMMs need FP8 tensor cores
// (compute capability 8.9+, e.g. H100): skipped elsewhere.
TEST(OpHarness, Fp8) {
  REQUIRE_GPU();
  int dev = 0, major = 0, minor = 0;
  KAT_CUDA_CHECK(cudaGetDevice(&dev));
  KAT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  KAT_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  if (major * 10 + minor < 89) GTEST_SKIP() << "FP8 needs compute capability 8.9+ (the conversions and the GEMMs)";
  run_cases(kat_op_harness::fp8_cases());
}

// ---- arguments of the CUDA entry points -----------------------------------------------------------
using kat::DType;
using kat_gpu_test::DevBuf;

TEST(OpArgs, RejectsBadArguments) {
  REQUIRE_GPU();
  DevBuf buf(1 << 16);
  float* f = buf.as<float>();
  const float eps = kat_op_harness::kLnEps;
  EXPECT_THROW(kat::cuda::layernorm_forward({.rows = 4,
                                             .C = 0,
                                             .eps = eps,
                                             .dtype = DType::F32,
                                             .x = f,
                                             .gamma = f,
                                             .beta = f,
                                             .y = f,
                                             .mean = f,
                                             .rstd = f},
                                            nullptr),
               kat::Error);
  EXPECT_THROW(kat::cuda::layernorm_forward({.rows = 4,
                                             .C = 4097,
                                             .eps = eps,
                                             .dtype = DType::BF16,
                                             .x = f,
                                             .gamma = f,
                                             .beta = f,
                                             .y = f,
                                             .mean = f,
                                             .rstd = f},
                                            nullptr),
               kat::Error);
  EXPECT_THROW(kat::cuda::layernorm_backward_workspace_bytes(4, 5000), kat::Error);
  EXPECT_THROW(kat::cuda::layernorm_backward({.rows = 4,
                                              .C = 64,
                                              .dtype = DType::F32,
                                              .x = f,
                                              .gamma = f,
                                              .mean = f,
                                              .rstd = f,
                                              .dy = f,
                                              .dx_acc = f,
                                              .dgamma = f,
                                              .dbeta = f,
                                              .workspace = nullptr},
                                             nullptr),
               kat::Error);  // null workspace
  auto xent = [&](int K, float ls, float* row_loss) {
    kat::cuda::softmax_xent({.B = 4,
                             .K = K,
                             .dtype = DType::F32,
                             .logits = f,
                             .target = f,
                             .label_smoothing = ls,
                             .dlogits = f,
                             .row_loss = row_loss,
                             .loss = nullptr},
                            nullptr);
  };
  EXPECT_THROW(xent(0, 0.f, f), kat::Error);
  EXPECT_THROW(xent(10, 1.f, f), kat::Error);
  EXPECT_THROW(xent(10, 0.f, nullptr), kat::Error);  // row_loss required
  EXPECT_THROW(kat::cuda::scale_rows(4, 10, DType::F32, nullptr, f, f, nullptr), kat::Error);
  EXPECT_THROW(kat::cuda::gelu_forward(-1, DType::F32, f, f, nullptr), kat::Error);
  EXPECT_THROW(kat::cuda::divide_inplace(16, DType::F32, f, 0.0f, nullptr), kat::Error);
  EXPECT_THROW(kat::cuda::adamw_scalars(1e-3, 0.9, 0.999, 1e-8, 0.05, 0), kat::Error);
  EXPECT_THROW(kat::cuda::attention_check_shape(300, 192, 3), kat::Error);   // N > 256
  EXPECT_THROW(kat::cuda::attention_check_shape(197, 192, 5), kat::Error);   // D % H != 0
  EXPECT_THROW(kat::cuda::attention_check_shape(197, 1024, 8), kat::Error);  // hd 128
}

TEST(OpArgs, Fp8RejectsBadArguments) {
  REQUIRE_GPU();
  using kat::Fp8Format;
  EXPECT_TRUE(kat::cuda::gemm_fp8_can_implement(788, 192, 576));   // M = 4 * 197 is fine
  EXPECT_FALSE(kat::cuda::gemm_fp8_can_implement(788, 200, 576));  // K % 16 != 0
  EXPECT_FALSE(kat::cuda::gemm_fp8_can_implement(788, 192, 40));   // N % 16 != 0
  EXPECT_THROW(kat::cuda::gemm_fp8_check(16, 24, 32, "test"), kat::Error);
  DevBuf buf(1 << 16);
  auto* u8 = buf.as<uint8_t>();
  float* f = buf.as<float>();
  // The cast + transpose needs cols and ld_t multiples of 16, ld_t >= rows and aligned pointers.
  auto cast_t = [&](int64_t rows, int64_t cols, int64_t ld_t, const void* x) {
    kat::cuda::fp8_cast({.rows = rows,
                         .cols = cols,
                         .dtype = DType::BF16,
                         .x = x,
                         .format = Fp8Format::E4M3,
                         .scale = f,
                         .q = u8,
                         .q_t = u8 + 8192,
                         .ld_t = ld_t},
                        nullptr);
  };
  EXPECT_THROW(cast_t(16, 24, 16, f), kat::Error);
  EXPECT_THROW(cast_t(40, 16, 32, f), kat::Error);                // ld_t < rows
  EXPECT_THROW(cast_t(16, 16, 24, f), kat::Error);                // ld_t % 16
  EXPECT_THROW(cast_t(16, 16, 16, buf.as<char>(2)), kat::Error);  // x misaligned
  EXPECT_THROW(kat::cuda::fp8_cast({.rows = 4, .cols = 4, .x = f, .scale = f}, nullptr), kat::Error);  // no output
  EXPECT_THROW(kat::cuda::fp8_scale_update({.count = 2, .amax = nullptr, .scale = f}, nullptr), kat::Error);
  int major = 0, dev = 0;
  KAT_CUDA_CHECK(cudaGetDevice(&dev));
  KAT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  if (major < 9) return;  // GemmFp8 itself needs FP8 tensor cores
  kat::cuda::GemmFp8 g;
  EXPECT_THROW(
      g.forward({.M = 16, .K = 24, .N = 32, .x_q = u8, .W_q = u8, .x_scale_inv = f, .W_scale_inv = f, .y = f},
                nullptr),
      kat::Error);
  EXPECT_THROW(g.forward({.M = 16,
                          .K = 32,
                          .N = 32,
                          .x_q = u8 + 8,  // not 16-byte aligned
                          .W_q = u8,
                          .x_scale_inv = f,
                          .W_scale_inv = f,
                          .y = f},
                         nullptr),
               kat::Error);
  EXPECT_THROW(g.backward_weight({.M = 20,
                                  .K = 32,
                                  .N = 32,
                                  .ld_t = 16,  // < M
                                  .dy_qT = u8,
                                  .x_qT = u8,
                                  .dy_scale_inv = f,
                                  .x_scale_inv = f,
                                  .dW = f},
                                 nullptr),
               kat::Error);
}

TEST(OpArgs, ZeroSizeIsANoOp) {
  REQUIRE_GPU();
  DevBuf buf(64);
  std::vector<float> ones(16, 1.f);
  kat_gpu_test::upload_f32(buf.p, ones);
  float* f = buf.as<float>();
  EXPECT_EQ(kat::cuda::layernorm_backward_workspace_bytes(0, 768), 0u);
  kat::cuda::layernorm_forward({.rows = 0,
                                .C = 768,
                                .eps = kat_op_harness::kLnEps,
                                .dtype = DType::BF16,
                                .x = f,
                                .gamma = f,
                                .beta = f,
                                .y = f,
                                .mean = f,
                                .rstd = f},
                               nullptr);
  kat::cuda::layernorm_backward({.rows = 0,
                                 .C = 768,
                                 .dtype = DType::BF16,
                                 .x = f,
                                 .gamma = f,
                                 .mean = f,
                                 .rstd = f,
                                 .dy = f,
                                 .dx_acc = f,
                                 .dgamma = f,
                                 .dbeta = f,
                                 .workspace = nullptr},
                                nullptr);
  kat::cuda::gelu_forward(0, DType::F32, f, f, nullptr);
  kat::cuda::gelu_backward(0, DType::F32, f, f, f, nullptr);
  kat::cuda::softmax_xent({.B = 0,
                           .K = 10,
                           .dtype = DType::F32,
                           .logits = f,
                           .target = f,
                           .label_smoothing = 0.f,
                           .dlogits = f,
                           .row_loss = f,
                           .loss = f},
                          nullptr);
  kat::cuda::residual_add(0, 10, DType::F32, f, f, f, f, nullptr);
  kat::cuda::scale_rows(3, 0, DType::F32, f, f, f, nullptr);
  kat::cuda::adamw_step({.n = 0,
                         .scalars = kat::cuda::adamw_scalars(1e-3, 0.9, 0.999, 1e-8, 0.05, 1),
                         .params = f,
                         .grads = f,
                         .m = f,
                         .v = f},
                        nullptr);
  kat::cuda::ema_update(0, f, f, 0.999, nullptr);
  KAT_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(kat_gpu_test::download_f32(f, 16) == ones);
}

TEST(OpArgs, GrkanRejectsBadShapes) {
  REQUIRE_GPU();
  kat::ops::GrkanShape s;
  s.rows = 4;
  s.dim = 100;  // 100 % 8 != 0
  DevBuf buf(1 << 16);
  float* f = buf.as<float>();
  auto bwd = [&](DType t, void* ws) {
    kat::cuda::grkan_backward(
        {.shape = s, .dtype = t, .x = f, .dy = f, .a = f, .b = f, .dx = f, .da = f, .db = f, .workspace = ws},
        nullptr);
  };
  EXPECT_THROW(kat::cuda::grkan_forward(s, DType::F32, f, f, f, f, nullptr), kat::Error);
  EXPECT_THROW(kat::cuda::grkan_backward_workspace_bytes(s), kat::Error);
  s.dim = 96;
  s.num_rows = 3;  // neither 1 nor G
  EXPECT_THROW(bwd(DType::BF16, f), kat::Error);
  s.num_rows = 1;
  s.m = 9;  // degree out of range
  EXPECT_THROW(kat::cuda::grkan_forward(s, DType::F32, f, f, f, f, nullptr), kat::Error);
  s.m = 5;
  EXPECT_THROW(bwd(DType::F32, nullptr), kat::Error);  // null workspace
}

TEST(OpArgs, GrkanZeroRowsIsANoOp) {
  REQUIRE_GPU();
  kat::ops::GrkanShape s;
  s.rows = 0;
  s.dim = 768;
  EXPECT_EQ(kat::cuda::grkan_backward_workspace_bytes(s), 0u);
  DevBuf buf(64);
  std::vector<float> ones(16, 1.f);
  kat_gpu_test::upload_f32(buf.as<float>(), ones);
  float* f = buf.as<float>();
  kat::cuda::grkan_forward(s, DType::BF16, f, f, f, f, nullptr);
  kat::cuda::grkan_backward({.shape = s,
                             .dtype = DType::BF16,
                             .x = f,
                             .dy = f,
                             .a = f,
                             .b = f,
                             .dx = f,
                             .da = f,
                             .db = f,
                             .workspace = nullptr},
                            nullptr);
  KAT_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(kat_gpu_test::download_f32(f, 16) == ones);
}
