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
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_memory.h"
#include "ops/cuda/gemm.h"

#define KAT_CUBLAS_CHECK(expr)                                                                                 \
  do {                                                                                                         \
    const cublasStatus_t kat_st_ = (expr);                                                                     \
    if (kat_st_ != CUBLAS_STATUS_SUCCESS)                                                                      \
      throw std::runtime_error(std::string("cuBLASLt error at ") + __FILE__ + ":" + std::to_string(__LINE__) + \
                               ": " + #expr + " -> status " + std::to_string(static_cast<int>(kat_st_)));      \
  } while (0)

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

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;  // an algorithm was found
};

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

// Column sums db[c] += sum_r dy[r, c] (bias gradients), deterministic, two stages:
// Stage 1: block = 32 column lanes x 8 row lanes over one chunk of kRowsPerChunk rows; a thread owns
// VEC consecutive columns (one 16-byte load per row: 8 bf16 / 4 fp32; VEC = 1 when N or the
// pointer does not allow it), sums its rows in order (fp32), then the 8 row lanes are added in
// order through shared memory: partial[chunk][col].
// Stage 2: block = 32 columns x 8 chunk lanes; each thread sums chunks lane, lane + 8, ... in order,
// then the 8 lanes in order; db[col] += total.
// (Session 1 used scalar 2-byte loads in stage 1 and one thread per column looping over all 99
// 512-row chunks in stage 2 on a handful of blocks; stage 2 took as long as stage 1.)
constexpr int kColLanes = 32, kRowLanes = 8, kRowsPerChunk = 256;

template <typename T, int VEC>
__global__ void __launch_bounds__(kColLanes* kRowLanes)
    colsum_stage1(int64_t M, int64_t N, const T* __restrict__ dy, float* __restrict__ partial) {
  __shared__ float red[kRowLanes][kColLanes * VEC];
  const int64_t c0 = (int64_t(blockIdx.x) * kColLanes + threadIdx.x) * VEC;
  const int64_t r0 = int64_t(blockIdx.y) * kRowsPerChunk;
  const int64_t r1 = std::min<int64_t>(M, r0 + kRowsPerChunk);
  float s[VEC];
#pragma unroll
  for (int e = 0; e < VEC; ++e) s[e] = 0.f;
  if (c0 < N) {
#pragma unroll 4
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes) {
      const T* row = dy + r * N + c0;
      if constexpr (VEC == 1) {
        s[0] += float(row[0]);
      } else if constexpr (sizeof(T) == 2) {  // 8 bf16
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(row));
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          s[2 * i] += __uint_as_float(w[i] << 16);
          s[2 * i + 1] += __uint_as_float(w[i] & 0xffff0000u);
        }
      } else {  // 4 fp32
        const float4 v = __ldg(reinterpret_cast<const float4*>(row));
        s[0] += v.x, s[1] += v.y, s[2] += v.z, s[3] += v.w;
      }
    }
  }
#pragma unroll
  for (int e = 0; e < VEC; ++e) red[threadIdx.y][threadIdx.x * VEC + e] = s[e];
  __syncthreads();
  // Thread (x, y) finalises columns x + 32 k of the block's 32 VEC columns, k = y, y + 8, ...
  const int nb = kColLanes * VEC;
  for (int j = threadIdx.y * kColLanes + threadIdx.x; j < nb; j += kColLanes * kRowLanes) {
    const int64_t col = int64_t(blockIdx.x) * nb + j;
    if (col >= N) continue;
    float t = red[0][j];
#pragma unroll
    for (int l = 1; l < kRowLanes; ++l) t += red[l][j];
    partial[int64_t(blockIdx.y) * N + col] = t;
  }
}

__global__ void __launch_bounds__(kColLanes* kRowLanes)
    colsum_stage2(int64_t chunks, int64_t N, const float* __restrict__ partial, float* __restrict__ db) {
  __shared__ float red[kRowLanes][kColLanes];
  const int64_t col = int64_t(blockIdx.x) * kColLanes + threadIdx.x;
  float t = 0.f;
  if (col < N)
    for (int64_t c = threadIdx.y; c < chunks; c += kRowLanes) t += partial[c * N + col];
  red[threadIdx.y][threadIdx.x] = t;
  __syncthreads();
  if (threadIdx.y == 0 && col < N) {
    float u = red[0][threadIdx.x];
#pragma unroll
    for (int l = 1; l < kRowLanes; ++l) u += red[l][threadIdx.x];
    db[col] += u;
  }
}

int64_t colsum_chunks(int64_t M) { return (M + kRowsPerChunk - 1) / kRowsPerChunk; }

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
    KAT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&pl.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = p.ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = p.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    KAT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(pl.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    KAT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(pl.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    if (p.bias_type >= 0) {
      const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
      KAT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(pl.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
      const int32_t bt = p.bias_type;
      KAT_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(pl.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
    }
    // Stored shapes: A is (m x k) or, transposed, (k x m); B is (k x n) or (n x k).
    KAT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl.a, p.ab_type, p.ta ? p.k : p.m, p.ta ? p.m : p.k, p.lda));
    KAT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl.b, p.ab_type, p.tb ? p.n : p.k, p.tb ? p.k : p.n, p.ldb));
    KAT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl.d, p.cd_type, p.m, p.n, p.ldd));
    for (int attempt = 0; attempt < 2 && !pl.ok; ++attempt) {
      cublasLtMatmulPreference_t pref;
      KAT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
      const uint64_t wsb = ws_bytes;
      KAT_CUBLAS_CHECK(
          cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof(wsb)));
      KAT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                            &p.al_a, sizeof(uint32_t)));
      KAT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                            &p.al_b, sizeof(uint32_t)));
      KAT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                            &p.al_d, sizeof(uint32_t)));
      KAT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                            &p.al_d, sizeof(uint32_t)));
      if (attempt == 0) {
        // Deterministic reductions only: no in-place (atomic) split-K reduction.
        const uint32_t mask = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE |
                              CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE;
        KAT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                              &mask, sizeof(mask)));
      }
      cublasLtMatmulHeuristicResult_t res{};
      int returned = 0;
      const cublasStatus_t st =
          cublasLtMatmulAlgoGetHeuristic(handle, pl.desc, pl.a, pl.b, pl.d, pl.d, pref, 1, &res, &returned);
      cublasLtMatmulPreferenceDestroy(pref);
      if (st == CUBLAS_STATUS_SUCCESS && returned > 0 && res.state == CUBLAS_STATUS_SUCCESS) {
        pl.algo = res.algo;
        pl.ok = true;
      }
    }
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
    for (auto& [k, pl] : plans) {
      if (pl.a) cublasLtMatrixLayoutDestroy(pl.a);
      if (pl.b) cublasLtMatrixLayoutDestroy(pl.b);
      if (pl.d) cublasLtMatrixLayoutDestroy(pl.d);
      if (pl.desc) cublasLtMatmulDescDestroy(pl.desc);
    }
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

std::size_t column_sum_workspace_bytes(int64_t M, int64_t N) {
  return std::size_t(std::max<int64_t>(colsum_chunks(M), 1) * std::max<int64_t>(N, 1)) * sizeof(float);
}

void column_sum_accumulate(int64_t M, int64_t N, DType st, const void* dy, float* db, void* workspace,
                           cudaStream_t stream) {
  kat::ops::check_column_sum_shape(M, N, "column_sum_accumulate");
  if (M == 0 || N == 0) return;
  const int64_t chunks = colsum_chunks(M);
  KAT_CHECK(chunks < 65536, "column_sum_accumulate: too many rows (", M, ")");
  float* partial = static_cast<float*>(workspace);
  const dim3 block(kColLanes, kRowLanes);
  // 16-byte loads when every row start is 16-byte aligned.
  const bool vec_ok = (reinterpret_cast<uintptr_t>(dy) % 16 == 0) && (N * int64_t(dtype_size(st))) % 16 == 0;
  auto grid1 = [&](int vec) {
    return dim3(unsigned((N + int64_t(kColLanes) * vec - 1) / (int64_t(kColLanes) * vec)), unsigned(chunks));
  };
  if (st == DType::F32) {
    const auto* p = static_cast<const float*>(dy);
    if (vec_ok)
      colsum_stage1<float, 4><<<grid1(4), block, 0, stream>>>(M, N, p, partial);
    else
      colsum_stage1<float, 1><<<grid1(1), block, 0, stream>>>(M, N, p, partial);
  } else {
    const auto* p = static_cast<const __nv_bfloat16*>(dy);
    if (vec_ok)
      colsum_stage1<__nv_bfloat16, 8><<<grid1(8), block, 0, stream>>>(M, N, p, partial);
    else
      colsum_stage1<__nv_bfloat16, 1><<<grid1(1), block, 0, stream>>>(M, N, p, partial);
  }
  KAT_CUDA_CHECK_LAUNCH();
  colsum_stage2<<<unsigned((N + kColLanes - 1) / kColLanes), block, 0, stream>>>(chunks, N, partial, db);
  KAT_CUDA_CHECK_LAUNCH();
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
