// cuBLASLt FP8 GEMMs of the linear layers (see gemm_fp8.h for the math, the layouts and the
// choices).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <tuple>

#include "kat/core/error.h"
#include "ops/cuda/cublaslt_plan.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_memory.h"
#include "ops/cuda/fp8.h"   // fp8_padded_rows: the transposed codes' row length
#include "ops/cuda/gemm.h"  // add_bias: the fp32 bias when the epilogue's bf16 copy is not given
#include "ops/cuda/gemm_fp8.h"

namespace kat::cuda {

namespace {

cudaDataType_t fp8_type(Fp8Format f) { return f == Fp8Format::E4M3 ? CUDA_R_8F_E4M3 : CUDA_R_8F_E5M2; }

uint32_t ptr_alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al >>= 1;
  return al;
}

bool al16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Column-major problem: D (m x n) = scale_A op(A) scale_B op(B) + beta C, C = D, op(A) = A^T
// (A stored k x m), op(B) = B (stored k x n): the "TN" layout FP8 needs.
struct Problem {
  int64_t m, n, k;
  int64_t lda, ldb, ldd;
  cudaDataType_t a_type, b_type, d_type;
  int bias_type;  // -1: no bias; else the cudaDataType_t of the epilogue's bias (length m)
  bool beta1;     // accumulate into D
  bool fast_accum;
  uint32_t al_a, al_b, al_d;
  auto key() const {
    return std::make_tuple(m, n, k, lda, ldb, ldd, int(a_type), int(b_type), int(d_type), bias_type, beta1,
                           fast_accum, al_a, al_b, al_d);
  }
  std::string describe() const {
    return "(m, n, k) = (" + std::to_string(m) + ", " + std::to_string(n) + ", " + std::to_string(k) +
           "), types A " + std::to_string(int(a_type)) + " B " + std::to_string(int(b_type)) + " D " +
           std::to_string(int(d_type)) + ", bias " + std::to_string(bias_type) + ", fast_accum " +
           std::to_string(int(fast_accum));
  }
};

using Plan = CublasLtPlan;

}  // namespace

std::string gemm_fp8_unsupported(int64_t M, int64_t K, int64_t N) {
  if (M < 0 || K < 1 || N < 1)
    return "bad shape (M, K, N) = (" + std::to_string(M) + ", " + std::to_string(K) + ", " + std::to_string(N) +
           ")";
  if (K % 16 != 0 || N % 16 != 0)
    return "FP8 GEMMs need K (in = " + std::to_string(K) + ") and N (out = " + std::to_string(N) +
           ") multiples of 16 (16-byte aligned leading dimensions of the 8-bit operands)";
  return {};
}

void gemm_fp8_check(int64_t M, int64_t K, int64_t N, const char* where) {
  const std::string why = gemm_fp8_unsupported(M, K, N);
  KAT_CHECK(why.empty(), where, ": ", why);
}

struct GemmFp8::Impl {
  cublasLtHandle_t handle = nullptr;
  DeviceBuffer<unsigned char> workspace;  // cuBLASLt scratch (ws_bytes)
  std::size_t ws_bytes = 0;
  std::map<decltype(std::declval<Problem>().key()), Plan> plans;

  // The scale (and bias) pointers are set before the heuristic runs (with the first call's values:
  // the heuristic may depend on whether they are set) and again on every call.
  static void set_pointers(const Plan& pl, const void* a_scale, const void* b_scale, const void* bias,
                           bool has_bias) {
    KAT_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(pl.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale, sizeof(a_scale)));
    KAT_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(pl.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale, sizeof(b_scale)));
    if (has_bias)
      KAT_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(pl.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }

  Plan& plan(const Problem& p, const void* a_scale, const void* b_scale, const void* bias) {
    auto it = plans.find(p.key());
    if (it != plans.end()) return it->second;
    Plan pl;
    pl.desc = create_matmul_desc(CUBLAS_OP_T, CUBLAS_OP_N, p.bias_type);
    const int8_t fast = p.fast_accum ? 1 : 0;
    KAT_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(pl.desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof(fast)));
    set_pointers(pl, a_scale, b_scale, bias, p.bias_type >= 0);
    // Stored shapes: A (k x m) (op T), B (k x n) (op N), C = D (m x n).
    KAT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl.a, p.a_type, p.k, p.m, p.lda));
    KAT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl.b, p.b_type, p.k, p.n, p.ldb));
    KAT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl.d, p.d_type, p.m, p.n, p.ldd));
    pl.ok = pick_cublaslt_algo(handle, pl.desc, pl.a, pl.b, pl.d, ws_bytes, p.al_a, p.al_b, p.al_d, &pl.algo);
    return plans.emplace(p.key(), pl).first->second;
  }

  // Returns false when cuBLASLt has no algorithm for p.
  bool run(const Problem& p, const void* A, const void* B, void* D, const float* a_scale, const float* b_scale,
           const void* bias, cudaStream_t s) {
    Plan& pl = plan(p, a_scale, b_scale, bias);
    if (!pl.ok) return false;
    set_pointers(pl, a_scale, b_scale, bias, p.bias_type >= 0);
    const float alpha = 1.f, beta = p.beta1 ? 1.f : 0.f;
    KAT_CUBLAS_CHECK(cublasLtMatmul(handle, pl.desc, &alpha, A, pl.a, B, pl.b, &beta, D, pl.d, D, pl.d, &pl.algo,
                                    workspace.data(), ws_bytes, s));
    return true;
  }

  ~Impl() {
    for (auto& [k, pl] : plans) pl.destroy();
    if (handle) cublasLtDestroy(handle);
  }
};

GemmFp8::GemmFp8(std::size_t workspace_bytes) : impl_(std::make_unique<Impl>()) {
  int dev = 0, major = 0, minor = 0;
  KAT_CUDA_CHECK(cudaGetDevice(&dev));
  KAT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  KAT_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  KAT_CHECK(major * 10 + minor >= 89, "GemmFp8: FP8 tensor cores need compute capability 8.9 or newer; device ",
            dev, " has ", major, ".", minor);
  KAT_CUBLAS_CHECK(cublasLtCreate(&impl_->handle));
  impl_->ws_bytes = workspace_bytes;
  impl_->workspace.allocate(workspace_bytes);
}
GemmFp8::~GemmFp8() = default;

void GemmFp8::forward(const GemmFp8ForwardArgs& a, cudaStream_t stream) {
  gemm_fp8_check(a.M, a.K, a.N, "GemmFp8::forward");
  KAT_CHECK(a.x_q && a.W_q && a.x_scale_inv && a.W_scale_inv && a.y, "GemmFp8::forward: null pointer");
  KAT_CHECK(a.b_bf16 == nullptr || a.b != nullptr, "GemmFp8::forward: b_bf16 given without b");
  KAT_CHECK(al16(a.x_q) && al16(a.W_q) && al16(a.y), "GemmFp8::forward: x_q, W_q and y must be 16-byte aligned");
  if (a.M == 0) return;
  const int bias_type = a.b_bf16 != nullptr ? int(CUDA_R_16BF) : -1;
  // y^T (N x M) = W_q^T-op (stored K x N) x_q (stored K x M).
  Problem p{a.N,
            a.M,
            a.K,
            a.K,
            a.K,
            a.N,
            fp8_type(Fp8Format::E4M3),
            fp8_type(Fp8Format::E4M3),
            CUDA_R_16BF,
            bias_type,
            false,
            a.fast_accum,
            ptr_alignment(a.W_q),
            ptr_alignment(a.x_q),
            ptr_alignment(a.y)};
  if (impl_->run(p, a.W_q, a.x_q, a.y, a.W_scale_inv, a.x_scale_inv, a.b_bf16, stream)) {
    if (a.b != nullptr && bias_type < 0) add_bias(a.M, a.N, DType::BF16, a.y, a.b, stream);
    return;
  }
  KAT_CHECK(bias_type >= 0, "GemmFp8::forward: cuBLASLt found no algorithm for (M, K, N) = (", a.M, ", ", a.K,
            ", ", a.N, "): ", p.describe());
  p.bias_type = -1;  // no algorithm with the bias epilogue: the separate kernel adds the fp32 bias
  KAT_CHECK(impl_->run(p, a.W_q, a.x_q, a.y, a.W_scale_inv, a.x_scale_inv, nullptr, stream),
            "GemmFp8::forward: cuBLASLt found no algorithm for (M, K, N) = (", a.M, ", ", a.K, ", ", a.N,
            "): ", p.describe());
  add_bias(a.M, a.N, DType::BF16, a.y, a.b, stream);
}

void GemmFp8::backward_data(const GemmFp8BackwardDataArgs& a, cudaStream_t stream) {
  gemm_fp8_check(a.M, a.K, a.N, "GemmFp8::backward_data");
  KAT_CHECK(a.dy_q && a.W_qT && a.dy_scale_inv && a.W_scale_inv && a.dx, "GemmFp8::backward_data: null pointer");
  KAT_CHECK(al16(a.dy_q) && al16(a.W_qT) && al16(a.dx),
            "GemmFp8::backward_data: dy_q, W_qT and dx must be 16-byte aligned");
  if (a.M == 0) return;
  // dx^T (K x M) = W_qT^T-op (stored N x K) dy_q (stored N x M).
  const Problem p{a.K,
                  a.M,
                  a.N,
                  a.N,
                  a.N,
                  a.K,
                  fp8_type(Fp8Format::E4M3),
                  fp8_type(Fp8Format::E5M2),
                  CUDA_R_16BF,
                  -1,
                  false,
                  a.fast_accum,
                  ptr_alignment(a.W_qT),
                  ptr_alignment(a.dy_q),
                  ptr_alignment(a.dx)};
  KAT_CHECK(impl_->run(p, a.W_qT, a.dy_q, a.dx, a.W_scale_inv, a.dy_scale_inv, nullptr, stream),
            "GemmFp8::backward_data: cuBLASLt found no algorithm for (M, K, N) = (", a.M, ", ", a.K, ", ", a.N,
            "): ", p.describe());
}

void GemmFp8::backward_weight(const GemmFp8BackwardWeightArgs& a, cudaStream_t stream) {
  gemm_fp8_check(a.M, a.K, a.N, "GemmFp8::backward_weight");
  const int64_t ld_t = a.ld_t > 0 ? a.ld_t : fp8_padded_rows(a.M);
  KAT_CHECK(ld_t >= a.M && ld_t % 16 == 0, "GemmFp8::backward_weight: ld_t = ", ld_t,
            " must be a multiple of 16 and >= M = ", a.M);
  KAT_CHECK(a.dy_qT && a.x_qT && a.dy_scale_inv && a.x_scale_inv && a.dW,
            "GemmFp8::backward_weight: null pointer");
  KAT_CHECK(al16(a.dy_qT) && al16(a.x_qT) && al16(a.dW),
            "GemmFp8::backward_weight: dy_qT, x_qT and dW must be 16-byte aligned");
  if (a.M == 0) return;
  // dW^T (K x N) += x_qT^T-op (stored ld_t x K) dy_qT (stored ld_t x N).
  const Problem p{a.K,
                  a.N,
                  ld_t,
                  ld_t,
                  ld_t,
                  a.K,
                  fp8_type(Fp8Format::E4M3),
                  fp8_type(Fp8Format::E5M2),
                  CUDA_R_32F,
                  -1,
                  true,
                  a.fast_accum,
                  ptr_alignment(a.x_qT),
                  ptr_alignment(a.dy_qT),
                  ptr_alignment(a.dW)};
  KAT_CHECK(impl_->run(p, a.x_qT, a.dy_qT, a.dW, a.x_scale_inv, a.dy_scale_inv, nullptr, stream),
            "GemmFp8::backward_weight: cuBLASLt found no algorithm for (M, K, N) = (", a.M, ", ", a.K, ", ", a.N,
            "), ld_t ", ld_t, ": ", p.describe());
}

}  // namespace kat::cuda
