// What the two cuBLASLt GEMM classes share (ops/cuda/gemm.cu: bf16/fp32, ops/cuda/gemm_fp8.cu: FP8):
// the status check, a cached matmul plan (descriptor, layouts, algorithm), its descriptor with fp32
// compute and the bias epilogue, and the choice of one algorithm for it.
#pragma once
#include <cublasLt.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#define KAT_CUBLAS_CHECK(expr)                                                                                 \
  do {                                                                                                         \
    const cublasStatus_t kat_st_ = (expr);                                                                     \
    if (kat_st_ != CUBLAS_STATUS_SUCCESS)                                                                      \
      throw std::runtime_error(std::string("cuBLASLt error at ") + __FILE__ + ":" + std::to_string(__LINE__) + \
                               ": " + #expr + " -> status " + std::to_string(static_cast<int>(kat_st_)));      \
  } while (0)

namespace kat::cuda {

// One cached matmul: descriptor, the layouts of A, B and D (= C), the algorithm. Owned by the GEMM
// class's plan cache, which calls destroy() once when it goes.
struct CublasLtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;  // an algorithm was found

  void destroy() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

// A matmul descriptor with fp32 accumulation and fp32 alpha/beta, operations ta on A and tb on B,
// and, for bias_type >= 0 (a cudaDataType_t), the bias epilogue with a bias of that type.
inline cublasLtMatmulDesc_t create_matmul_desc(cublasOperation_t ta, cublasOperation_t tb, int32_t bias_type) {
  cublasLtMatmulDesc_t desc = nullptr;
  KAT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  KAT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  KAT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  if (bias_type >= 0) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    KAT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    KAT_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
  }
  return desc;
}

// The heuristic's first algorithm for desc with layouts a, b and d (= c), within ws_bytes of
// workspace, for pointers aligned to al_a / al_b / al_d bytes. First asked for deterministic
// reductions only (no in-place, atomic split-K reduction), then without that restriction. false:
// cuBLASLt offers none (callers fall back or report the shape).
inline bool pick_cublaslt_algo(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                               cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t d, uint64_t ws_bytes,
                               uint32_t al_a, uint32_t al_b, uint32_t al_d, cublasLtMatmulAlgo_t* algo) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    cublasLtMatmulPreference_t pref;
    KAT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    KAT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                          &ws_bytes, sizeof(ws_bytes)));
    KAT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a,
                                                          sizeof(al_a)));
    KAT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b,
                                                          sizeof(al_b)));
    KAT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d,
                                                          sizeof(al_d)));
    KAT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d,
                                                          sizeof(al_d)));
    if (attempt == 0) {
      // Deterministic reductions only: no in-place (atomic) split-K reduction.
      const uint32_t mask = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE |
                            CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE;
      KAT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                            &mask, sizeof(mask)));
    }
    cublasLtMatmulHeuristicResult_t res{};
    int returned = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle, desc, a, b, d, d, pref, 1, &res, &returned);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st == CUBLAS_STATUS_SUCCESS && returned > 0 && res.state == CUBLAS_STATUS_SUCCESS) {
      *algo = res.algo;
      return true;
    }
  }
  return false;
}

}  // namespace kat::cuda
