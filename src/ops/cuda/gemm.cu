// cuBLASLt linear GEMMs and the deterministic bias-gradient column sum (see gemm.h).
#include <cublasLt.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <tuple>

#include "kat/core/error.h"
#include "ops/cuda/cublaslt_plan.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_memory.h"
#include "ops/cuda/gemm.h"

namespace kat::cuda {

namespace {

cudaDataType_t dtype(DType st) { return st == DType::F32 ? CUDA_R_32F : CUDA_R_16BF; }

uint32_t ptr_alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al >>= 1;
  return al;
}

// Column-major problem: D (m x n) = alpha op(A) op(B) + beta C (C = D).
struct Problem {
  int64_t m, n, k;
  bool ta, tb;
  cudaDataType_t ab_type, cd_type;
  int64_t lda, ldb, ldd;
  int bias_type;  // -1: no bias; else the cudaDataType_t of the epilogue's bias (length m)
  bool beta1;     // accumulate into D
  uint32_t al_a, al_b, al_d;
  auto key() const {
    return std::make_tuple(m, n, k, ta, tb, int(ab_type), int(cd_type), lda, ldb, ldd, bias_type, beta1, al_a,
                           al_b, al_d);
  }
};

using Plan = CublasLtPlan;

// y[r, c] += b[c]: threads over column pairs, blocks strided over rows (no per-element division).
template <typename T>
__global__ void add_bias_kernel(int64_t M, int64_t N, T* y, const float* b) {
  const int64_t c = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * 2;
  if (c >= N) return;
  const bool two = c + 1 < N;
  const float b0 = b[c], b1 = two ? b[c + 1] : 0.f;
  for (int64_t r = blockIdx.y; r < M; r += gridDim.y) {
    T* row = y + r * N + c;
    row[0] = T(float(row[0]) + b0);
    if (two) row[1] = T(float(row[1]) + b1);
  }
}

}  // namespace

struct Gemm::Impl {
  cublasLtHandle_t handle = nullptr;
  DeviceBuffer<unsigned char> workspace;  // cuBLASLt scratch (ws_bytes)
  std::size_t ws_bytes = 0;
  std::map<decltype(std::declval<Problem>().key()), Plan> plans;

  Plan& plan(const Problem& p) {
    auto it = plans.find(p.key());
    if (it != plans.end()) return it->second;
    Plan pl;
    pl.desc = create_matmul_desc(p.ta ? CUBLAS_OP_T : CUBLAS_OP_N, p.tb ? CUBLAS_OP_T : CUBLAS_OP_N, p.bias_type);
    // Stored shapes: A is (m x k) or, transposed, (k x m); B is (k x n) or (n x k).
    KAT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl.a, p.ab_type, p.ta ? p.k : p.m, p.ta ? p.m : p.k, p.lda));
    KAT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl.b, p.ab_type, p.tb ? p.n : p.k, p.tb ? p.k : p.n, p.ldb));
    KAT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl.d, p.cd_type, p.m, p.n, p.ldd));
    pl.ok = pick_cublaslt_algo(handle, pl.desc, pl.a, pl.b, pl.d, ws_bytes, p.al_a, p.al_b, p.al_d, &pl.algo);
    return plans.emplace(p.key(), pl).first->second;
  }

  // Returns false when no algorithm exists (only tolerated for bias epilogues: caller falls back).
  bool run(const Problem& p, const void* A, const void* B, void* D, const void* bias, cudaStream_t s) {
    Plan& pl = plan(p);
    if (!pl.ok) return false;
    if (p.bias_type >= 0)
      KAT_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(pl.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
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

Gemm::Gemm(std::size_t workspace_bytes) : impl_(std::make_unique<Impl>()) {
  KAT_CUBLAS_CHECK(cublasLtCreate(&impl_->handle));
  impl_->ws_bytes = workspace_bytes;
  impl_->workspace.allocate(workspace_bytes);
}
Gemm::~Gemm() = default;

void Gemm::forward(int64_t M, int64_t K, int64_t N, DType st, const void* x, const void* W, const float* b,
                   void* y, cudaStream_t stream, const void* b_storage) {
  kat::ops::check_linear_shape(M, K, N, "Gemm::forward");
  if (M == 0) return;
  // fp32: the fp32 bias in the epilogue. bf16: the epilogue with an fp32 bias and bf16 output
  // selects a 3.6x slower kernel on the H200 (0.153 vs 0.042 ms at (50432, 192, 768)), so either
  // the bf16 copy of the bias goes into the epilogue (b_storage; as PyTorch's autocast, which
  // casts the bias to bf16 too) or a separate kernel adds the fp32 bias.
  int bias_type = -1;
  const void* bias_ptr = nullptr;
  if (b != nullptr && st == DType::F32) {
    bias_type = CUDA_R_32F;
    bias_ptr = b;
  } else if (b != nullptr && b_storage != nullptr) {
    bias_type = CUDA_R_16BF;
    bias_ptr = b_storage;
  }
  Problem p{N,
            M,
            K,
            true,
            false,
            dtype(st),
            dtype(st),
            K,
            K,
            N,
            bias_type,
            false,
            ptr_alignment(W),
            ptr_alignment(x),
            ptr_alignment(y)};
  if (impl_->run(p, W, x, y, bias_ptr, stream)) {
    if (b != nullptr && bias_type < 0) add_bias(M, N, st, y, b, stream);
    return;
  }
  KAT_CHECK(b != nullptr, "Gemm::forward: cuBLASLt found no algorithm for (", M, ", ", K, ", ", N, ")");
  p.bias_type = -1;
  KAT_CHECK(impl_->run(p, W, x, y, nullptr, stream), "Gemm::forward: cuBLASLt found no algorithm");
  add_bias(M, N, st, y, b, stream);
}

void Gemm::backward_data(int64_t M, int64_t K, int64_t N, DType st, const void* dy, const void* W, void* dx,
                         cudaStream_t stream) {
  kat::ops::check_linear_shape(M, K, N, "Gemm::backward_data");
  if (M == 0) return;
  const Problem p{K,
                  M,
                  N,
                  false,
                  false,
                  dtype(st),
                  dtype(st),
                  K,
                  N,
                  K,
                  -1,
                  false,
                  ptr_alignment(W),
                  ptr_alignment(dy),
                  ptr_alignment(dx)};
  KAT_CHECK(impl_->run(p, W, dy, dx, nullptr, stream), "Gemm::backward_data: cuBLASLt found no algorithm");
}

void Gemm::backward_weight(int64_t M, int64_t K, int64_t N, DType st, const void* dy, const void* x, float* dW,
                           cudaStream_t stream) {
  kat::ops::check_linear_shape(M, K, N, "Gemm::backward_weight");
  if (M == 0) return;
  const Problem p{K,
                  N,
                  M,
                  false,
                  true,
                  dtype(st),
                  CUDA_R_32F,
                  K,
                  N,
                  K,
                  -1,
                  true,
                  ptr_alignment(x),
                  ptr_alignment(dy),
                  ptr_alignment(dW)};
  KAT_CHECK(impl_->run(p, x, dy, dW, nullptr, stream), "Gemm::backward_weight: cuBLASLt found no algorithm");
}

void add_bias(int64_t M, int64_t N, DType st, void* y, const float* b, cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  const int64_t pairs = (N + 1) / 2;
  const dim3 block(128);
  const dim3 grid(unsigned((pairs + 127) / 128), unsigned(std::min<int64_t>(M, 2048)));
  if (st == DType::F32)
    add_bias_kernel<float><<<grid, block, 0, stream>>>(M, N, static_cast<float*>(y), b);
  else
    add_bias_kernel<__nv_bfloat16><<<grid, block, 0, stream>>>(M, N, static_cast<__nv_bfloat16*>(y), b);
  KAT_CUDA_CHECK_LAUNCH();
}

}  // namespace kat::cuda
