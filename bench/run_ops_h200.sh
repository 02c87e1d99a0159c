#!/usr/bin/env bash
# Build, check and benchmark the CUDA small ops (src/ops/cuda/ops_cuda.{h,cu}: LayerNorm, GELU,
# softmax cross-entropy, drop-path residual, AdamW, EMA) on a GPU machine (the H200 of the device
# tool).
#
# That machine has nvcc, cmake and torch but none of the project's Debian packages (OpenBLAS,
# nlohmann-json, CLI11, gtest, ...), so the CMake project does not configure there. This script
# compiles only what the check needs, directly:
#   src/ops/cuda/ops_cuda.cu                         (nvcc, -Xptxas -v into build.log; once per
#                                                     tuning variant, see VARIANTS)
#   bench/gpu_ops_check_main.cu                      (nvcc; includes tests/gpu/test_ops_cuda.cu
#                                                     with its built-in mini test runner + bench)
#   src/ops/cpu/norm_cpu.cpp, misc_cpu.cpp,          (g++ -fopenmp; the CPU reference; no BLAS:
#   src/train/optim.cpp, src/model/params.cpp         linear_cpu.cpp is not needed)
# then runs: the cross-backend check, the bandwidth bench at (128*197, 768) bf16, and
# compute-sanitizer memcheck/racecheck on the small cases (KAT_OPS_SMALL=1, SAN_TIMEOUT s each). Logs and the CSV go to $OUT
# (default ./out/ops).
#
# usage: bench/run_ops_h200.sh          (from anywhere; paths are relative to the repository)
#   SKIP_SANITIZER=1  SKIP_BENCH=1  SKIP_CHECK=1     skip those steps
#   KAT_TEST_FILTER=LayerNorm,Gelu                   run only matching checks
#   VARIANTS="name:flags;name:flags"                 tuning variants of ops_cuda.cu (-D flags); the
#                                                    first is checked in full, benched in full and
#                                                    sanitized; the others get the LayerNorm checks
#                                                    (VARIANT_FILTER) and the LayerNorm bench
#                                                    (VARIANT_BENCH)
set -uo pipefail

KAT_BENCH_NAME=ops
source "$(dirname "$0")/h200_env.sh"  # ROOT OUT BUILD NVCC ARCH NVFLAGS OMPFLAG log

# ---- build (in parallel) -------------------------------------------------------------------------

t0=$(date +%s)
pids=()
for src in src/ops/cpu/norm_cpu.cpp src/ops/cpu/misc_cpu.cpp src/train/optim.cpp src/model/params.cpp; do
  name=$(basename "$src" .cpp)
  # gnu++20 as in the CMake build (optim.cpp uses M_PI)
  g++ -std=gnu++20 -O3 $OMPFLAG -I"$ROOT/src" -c "$ROOT/$src" -o "$BUILD/$name.o" \
    > "$BUILD/cpu_$name.log" 2>&1 & pids+=($!)
done
VARIANTS=${VARIANTS:-"default:"}
names=()
compile_variants "$ROOT/src/ops/cuda/ops_cuda.cu" ops_cuda
"$NVCC" $NVFLAGS -c "$ROOT/bench/gpu_ops_check_main.cu" -o "$BUILD/check.o" \
  > "$BUILD/check.log" 2>&1 & pids+=($!)
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
for f in "$BUILD"/*.log; do
  echo "--- $(basename "$f")" >> "$OUT/build.log"
  # ptxas: keep only the kernels' names, registers and spills, one line each
  sed -E 's/_ZN3kat4cuda[0-9]+_GLOBAL__N__[0-9a-f_]+ops_cuda_cu_[0-9a-f]{8}//' "$f" \
    | grep -vE "Compile time|^ptxas info    : Function properties" >> "$OUT/build.log"
done
if [ $fail -ne 0 ]; then
  log "BUILD FAILED"
  grep -B2 -A5 -E "error" "$BUILD"/*.log | head -60
  exit 1
fi
for name in "${names[@]}"; do
  "$NVCC" $ARCH "$BUILD/check.o" "$BUILD/ops_cuda_$name.o" "$BUILD/norm_cpu.o" "$BUILD/misc_cpu.o" \
    "$BUILD/optim.o" "$BUILD/params.o" ${OMPFLAG:+-Xcompiler $OMPFLAG} -o "$BUILD/gpu_ops_check_$name" \
    >> "$OUT/build.log" 2>&1 || { log "LINK FAILED ($name)"; tail -20 "$OUT/build.log"; exit 1; }
done
first=${names[0]}
cp "$BUILD/gpu_ops_check_$first" "$BUILD/gpu_ops_check"
log "built variants ${names[*]} in $(( $(date +%s) - t0 )) s"
spills=$(grep -cE "[1-9][0-9]* bytes spill (stores|loads)" "$OUT/build.log")
log "kernels with spills: $spills"

# ---- check ---------------------------------------------------------------------------------------
check_rc=0
if [ "${SKIP_CHECK:-0}" != 1 ]; then
  log "check"
  t0=$(date +%s)
  "$BUILD/gpu_ops_check" check 2>&1 | tee "$OUT/check.log"
  check_rc=${PIPESTATUS[0]}
  echo "check exit code: $check_rc ($(( $(date +%s) - t0 )) s)" | tee -a "$OUT/check.log"
  for name in "${names[@]:1}"; do
    echo "--- check variant $name" | tee -a "$OUT/check.log"
    KAT_TEST_FILTER=${VARIANT_FILTER:-LayerNorm} "$BUILD/gpu_ops_check_$name" check 2>&1 \
      | grep -E "FAILED|Failure|tests," | tee -a "$OUT/check.log"
    rc=${PIPESTATUS[0]}
    echo "check $name exit code: $rc" | tee -a "$OUT/check.log"
    [ "$rc" = 0 ] || check_rc=$rc
  done
fi
# ---- bench ---------------------------------------------------------------------------------------
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  log "bench"
  echo "--- variant $first" > "$OUT/bench.log"
  "$BUILD/gpu_ops_check" bench "$OUT/bench.csv" 2>&1 | tee -a "$OUT/bench.log"
  echo "bench exit code: ${PIPESTATUS[0]}" | tee -a "$OUT/bench.log"
  for name in "${names[@]:1}"; do
    echo "--- variant $name" | tee -a "$OUT/bench.log"
    KAT_BENCH_ONLY=${VARIANT_BENCH:-layernorm} "$BUILD/gpu_ops_check_$name" bench 2>&1 \
      | grep -E "copy|layernorm" | tee -a "$OUT/bench.log"
  done
fi

# ---- compute-sanitizer (last: the slowest step, time-limited) ------------------------------------
if [ "${SKIP_SANITIZER:-0}" != 1 ] && command -v compute-sanitizer > /dev/null; then
  : > "$OUT/sanitizer.log"
  for tool in memcheck racecheck; do
    echo "--- compute-sanitizer --tool $tool (KAT_OPS_SMALL=1)" | tee -a "$OUT/sanitizer.log"
    KAT_OPS_SMALL=1 KAT_TEST_FILTER=${SAN_FILTER:-LayerNormSmall,LayerNormWide,LayerNormMis,SoftmaxXent,Gelu,Residual,AdamW} \
      timeout ${SAN_TIMEOUT:-45} compute-sanitizer --tool $tool --error-exitcode 9 "$BUILD/gpu_ops_check" check 2>&1 \
      | grep -vE "^\s+(case|[a-z_]+ +err)" | tail -30 | tee -a "$OUT/sanitizer.log"
    echo "sanitizer $tool exit code: ${PIPESTATUS[0]}" | tee -a "$OUT/sanitizer.log"
  done
fi

echo "== summary"
grep -E "FAILED|Failure|tests,|exit code" "$OUT/check.log" 2>/dev/null | head -30
grep -E "exit code|ERROR SUMMARY" "$OUT/sanitizer.log" 2>/dev/null
grep -E "^---|copy|GB/s" "$OUT/bench.log" 2>/dev/null
exit $check_rc
