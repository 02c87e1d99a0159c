#!/usr/bin/env bash
# Build, check and benchmark the whole model on the GPU (KatModelCuda, src/model/kat_model_cuda.*,
# with src/ops/cuda/{gemm,attention,embed,grkan,ops}_cuda.cu) on a GPU machine (the H200 of the
# device tool), then the PyTorch/timm reference (bench/torch_gpu_bench.py) in the same invocation.
#
# That machine has nvcc, cmake and torch but none of the project's Debian packages, so the CMake
# project does not configure there. This script compiles what the check needs directly:
#   nvcc: src/ops/cuda/*.cu, bench/gpu_model_check_main.cu (includes tests/gpu/test_model_cuda.cu
#         with its mini runner)
#   g++ -fopenmp: the CPU reference (src/model/{kat_model,params,config,mimetic_init}.cpp,
#         src/ops/cpu/*.cpp, src/train/optim.cpp) and src/model/kat_model_cuda.cpp (-DKAT_HAVE_CUDA)
# Dependencies that machine lacks:
#   - nlohmann-json (header-only, for config.cpp): $CARRY/include/nlohmann (copied from
#     /usr/include/nlohmann of the dev machine; pass .carry in the device tool's `carry`).
#   - CBLAS (for the CPU reference's linear_cpu.cpp): if $CARRY/lib/libopenblas.so.0 exists it is
#     used, else a small OpenMP GEMM written below (row-major cblas_sgemm/dgemm, fp32/fp64
#     accumulation in k order) stands in. Either is a correct GEMM; only the summation order
#     differs, which is within the fp32 tolerances of the check. dgesvd_ (only used by the timm
#     init) is stubbed in the fallback.
# Logs and the CSV go to $OUT (default ./out/model).
#
# usage: bench/run_model_h200.sh
#   SKIP_CHECK=1 SKIP_BENCH=1 SKIP_TORCH=1     skip those steps
#   KAT_TEST_FILTER=..., KAT_MODEL_QUICK=1     passed to the check
#   TORCH_COMPILE=1                             also time torch.compile in the torch script
set -uo pipefail

KAT_BENCH_NAME=model
source "$(dirname "$0")/h200_env.sh"  # ROOT OUT BUILD NVCC ARCH NVFLAGS OMPFLAG log
CARRY=${CARRY:-$ROOT/.carry}
mkdir -p "$BUILD/include"
CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$NVCC")")}
NVFLAGS="$NVFLAGS -I$CARRY/include -I$BUILD/include -DKAT_HAVE_CUDA=1"
CXXFLAGS="-std=gnu++20 -O3 -march=native -fopenmp -I$ROOT/src -I$CARRY/include -I$BUILD/include -DKAT_SOURCE_DIR=\"$ROOT\""

# ---- BLAS for the CPU reference ------------------------------------------------------------------
BLASLIB=""
if [ -f "$CARRY/lib/libopenblas.so.0" ] && [ -f "$CARRY/include/cblas.h" ]; then
  BLASLIB="-L$CARRY/lib -l:libopenblas.so.0"
  export LD_LIBRARY_PATH="$CARRY/lib:${LD_LIBRARY_PATH:-}"
  log "CPU reference BLAS: carried OpenBLAS"
else
  log "CPU reference BLAS: built-in OpenMP GEMM (no OpenBLAS here)"
  cat > "$BUILD/include/cblas.h" <<'HDR'
#pragma once
#ifdef __cplusplus
extern "C" {
#endif
enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112, CblasConjTrans = 113 };
void cblas_sgemm(enum CBLAS_ORDER, enum CBLAS_TRANSPOSE, enum CBLAS_TRANSPOSE, int M, int N, int K,
                 float alpha, const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc);
void cblas_dgemm(enum CBLAS_ORDER, enum CBLAS_TRANSPOSE, enum CBLAS_TRANSPOSE, int M, int N, int K,
                 double alpha, const double* A, int lda, const double* B, int ldb, double beta, double* C, int ldc);
#ifdef __cplusplus
}
#endif
HDR
  cat > "$BUILD/blas_shim.cpp" <<'SRC'
#include <cblas.h>
#include <cstdio>
#include <cstdlib>
#include <vector>
template <typename T>
static void gemm(bool tA, bool tB, int M, int N, int K, T alpha, const T* A, int lda, const T* B, int ldb, T beta, T* C, int ldc) {
#pragma omp parallel for schedule(dynamic, 4) if (int64_t(M) * N * K > 100000)
  for (int i = 0; i < M; ++i) {
    std::vector<T> acc(N, T(0));
    if (!tB) {
      for (int k = 0; k < K; ++k) {
        const T a = tA ? A[int64_t(k) * lda + i] : A[int64_t(i) * lda + k];
        const T* b = B + int64_t(k) * ldb;
#pragma omp simd
        for (int j = 0; j < N; ++j) acc[j] += a * b[j];
      }
    } else {
      for (int j = 0; j < N; ++j) {
        const T* b = B + int64_t(j) * ldb;
        T s = 0;
        if (!tA) {
          const T* a = A + int64_t(i) * lda;
          for (int k = 0; k < K; ++k) s += a[k] * b[k];
        } else {
          for (int k = 0; k < K; ++k) s += A[int64_t(k) * lda + i] * b[k];
        }
        acc[j] = s;
      }
    }
    T* c = C + int64_t(i) * ldc;
    for (int j = 0; j < N; ++j) c[j] = alpha * acc[j] + (beta == T(0) ? T(0) : beta * c[j]);
  }
}
extern "C" void cblas_sgemm(CBLAS_ORDER o, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float* A,
                            int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  if (o != CblasRowMajor) std::abort();
  gemm<float>(ta != CblasNoTrans, tb != CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
extern "C" void cblas_dgemm(CBLAS_ORDER o, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, double alpha, const double* A,
                            int lda, const double* B, int ldb, double beta, double* C, int ldc) {
  if (o != CblasRowMajor) std::abort();
  gemm<double>(ta != CblasNoTrans, tb != CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
extern "C" void dgesvd_(const char*, const char*, const int*, const int*, double*, const int*, double*, double*,
                        const int*, double*, const int*, double*, const int*, int* info) {
  std::fprintf(stderr, "dgesvd_ stub: LAPACK not available in this build (timm init)\n");
  *info = -1;
}
SRC
fi

# ---- build (in parallel) -------------------------------------------------------------------------
t0=$(date +%s)
pids=()
CPU_SRCS="src/model/kat_model.cpp src/model/params.cpp src/model/config.cpp src/model/mimetic_init.cpp src/train/optim.cpp $(cd "$ROOT" && ls src/ops/cpu/*.cpp)"
for src in $CPU_SRCS; do
  name=$(basename "$src" .cpp)
  g++ $CXXFLAGS -c "$ROOT/$src" -o "$BUILD/cpu_$name.o" > "$BUILD/cpu_$name.log" 2>&1 & pids+=($!)
done
[ -f "$BUILD/blas_shim.cpp" ] && { g++ $CXXFLAGS -c "$BUILD/blas_shim.cpp" -o "$BUILD/cpu_blas_shim.o" > "$BUILD/cpu_blas_shim.log" 2>&1 & pids+=($!); }
g++ $CXXFLAGS -DKAT_HAVE_CUDA=1 -I"$CUDA_HOME/include" -c "$ROOT/src/model/kat_model_cuda.cpp" -o "$BUILD/cpu_kat_model_cuda.o" \
  > "$BUILD/cpu_kat_model_cuda.log" 2>&1 & pids+=($!)
for src in $(cd "$ROOT" && ls src/ops/cuda/*.cu); do
  name=$(basename "$src" .cu)
  "$NVCC" $NVFLAGS -Xptxas -v -c "$ROOT/$src" -o "$BUILD/cu_$name.o" > "$BUILD/cu_$name.log" 2>&1 & pids+=($!)
done
"$NVCC" $NVFLAGS -Xcompiler -fopenmp -DKAT_SOURCE_DIR="\"$ROOT\"" -c "$ROOT/bench/gpu_model_check_main.cu" -o "$BUILD/main.o" > "$BUILD/main.log" 2>&1 & pids+=($!)
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
for f in "$BUILD"/*.log; do
  echo "--- $(basename "$f")" >> "$OUT/build.log"
  grep -vE "Compile time|Function properties|^ptxas info    : (Compiling|Used [0-9]+ registers, used [0-9]+ barriers$)" "$f" \
    | grep -E "error|warning|spill|Used" | grep -vE " 0 bytes spill" >> "$OUT/build.log"
done
if [ $fail -ne 0 ]; then
  log "BUILD FAILED"
  grep -B2 -A6 -E "error" "$BUILD"/*.log | head -80
  exit 1
fi
"$NVCC" $ARCH "$BUILD"/main.o "$BUILD"/cu_*.o "$BUILD"/cpu_*.o -Xcompiler -fopenmp $BLASLIB -lcublasLt -lcublas \
  -o "$BUILD/gpu_model_check" >> "$OUT/build.log" 2>&1 || { log "LINK FAILED"; tail -30 "$OUT/build.log"; exit 1; }
log "built in $(( $(date +%s) - t0 )) s"

# ---- check ---------------------------------------------------------------------------------------
check_rc=0
if [ "${SKIP_CHECK:-0}" != 1 ]; then
  log "check"
  t0=$(date +%s)
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} "$BUILD/gpu_model_check" check 2>&1 | tee "$OUT/check.log"
  check_rc=${PIPESTATUS[0]}
  echo "check exit code: $check_rc ($(( $(date +%s) - t0 )) s)" | tee -a "$OUT/check.log"
fi
# ---- bench ---------------------------------------------------------------------------------------
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  log "bench"
  "$BUILD/gpu_model_check" bench "$OUT/ours.csv" 2>&1 | tee "$OUT/bench.log"
  echo "bench exit code: ${PIPESTATUS[0]}" | tee -a "$OUT/bench.log"
fi
if [ "${SKIP_TORCH:-0}" != 1 ]; then
  log "torch"
  python3 "$ROOT/bench/torch_gpu_bench.py" --ours "$OUT/ours.csv" --csv "$OUT/torch.csv" ${TORCH_COMPILE:+--compile} 2>&1 | tee "$OUT/torch.log"
fi
echo "== summary"
grep -E "FAILED|Failure|tests,|exit code" "$OUT/check.log" 2>/dev/null | head -30
exit $check_rc
