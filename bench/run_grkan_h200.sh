#!/usr/bin/env bash
# Build, check and benchmark the GR-KAN CUDA op on a GPU machine (the H200 of the device tool).
#
# That machine has nvcc, cmake, ninja and torch but none of the project's Debian packages
# (OpenBLAS, nlohmann-json, CLI11, gtest, libpng, libjpeg), so the full CMake project does not
# configure there. This script compiles only what the op needs, directly:
#   src/ops/cuda/grkan_cuda.cu            (nvcc; once per tuning variant, see VARIANTS)
#   src/ops/cpu/grkan_cpu.cpp             (g++ -fopenmp; CPU reference; needs src/core/error.h)
#   tests/gpu/test_grkan_cuda.cu          (nvcc -DKAT_GRKAN_NO_GTEST: built-in mini test runner)
#   bench/grkan_bench.cu                  (nvcc)
# then runs: the check (and compute-sanitizer memcheck/racecheck on a subset), the benchmark for
# every variant, and bench/grkan_torch.py. Logs and CSVs go to $OUT (default ./out/grkan).
#
# usage: bench/run_grkan_h200.sh            (from the repository root)
#   VARIANTS="name:flags;name:flags"       override the tuning variants (flags are -D options
#                                          of grkan_cuda.cu; the first variant is the one tested)
#   SKIP_TORCH=1 SKIP_SANITIZER=1          skip those steps
#   CHECK_ALL=1                            run the check for every variant, not only the first
#   NCU=1 [NCU_ONLY=bf16:768]              profile one forward / stage 1 / stage 2 with ncu
set -uo pipefail

KAT_BENCH_NAME=grkan
source "$(dirname "$0")/h200_env.sh"  # ROOT OUT BUILD NVCC ARCH NVFLAGS OMPFLAG log
VARIANTS=${VARIANTS:-"default:"}

# ---- build (in parallel) -----------------------------------------------------------------

pids=()
g++ -std=c++20 -O3 $OMPFLAG -I"$ROOT/src" -c "$ROOT/src/ops/cpu/grkan_cpu.cpp" -o "$BUILD/grkan_cpu.o" \
  > "$BUILD/cpu.log" 2>&1 & pids+=($!)
"$NVCC" $NVFLAGS -DKAT_GRKAN_NO_GTEST -c "$ROOT/tests/gpu/test_grkan_cuda.cu" -o "$BUILD/test.o" \
  > "$BUILD/test.log" 2>&1 & pids+=($!)
"$NVCC" $NVFLAGS -c "$ROOT/bench/grkan_bench.cu" -o "$BUILD/bench.o" > "$BUILD/bench.log" 2>&1 & pids+=($!)
names=()
compile_variants "$ROOT/src/ops/cuda/grkan_cuda.cu" grkan_cuda
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
for f in "$BUILD"/*.log; do
  echo "--- $(basename "$f")" >> "$OUT/build.log"
  # keep the ptxas resource lines of the main kernels short
  sed -E 's/_ZN3kat4cuda[0-9A-Za-z_]*grkan_/grkan_/' "$f" >> "$OUT/build.log"
done
if [ $fail -ne 0 ]; then
  log "BUILD FAILED"
  grep -B2 -A5 -E "error" "$BUILD"/*.log | head -60
  exit 1
fi
first=${names[0]}
for name in "${names[@]}"; do
  "$NVCC" $ARCH "$BUILD/test.o" "$BUILD/grkan_cuda_$name.o" "$BUILD/grkan_cpu.o" \
    ${OMPFLAG:+-Xcompiler $OMPFLAG} -o "$BUILD/grkan_check_$name" >> "$OUT/build.log" 2>&1 \
    || { log "LINK FAILED (check $name)"; tail -20 "$OUT/build.log"; exit 1; }
done
cp "$BUILD/grkan_check_$first" "$BUILD/grkan_check"
for name in "${names[@]}"; do
  "$NVCC" $ARCH "$BUILD/bench.o" "$BUILD/grkan_cuda_$name.o" -o "$BUILD/grkan_bench_$name" >> "$OUT/build.log" 2>&1 \
    || { log "LINK FAILED (bench $name)"; tail -20 "$OUT/build.log"; exit 1; }
done
log "built: check + bench variants ${names[*]}"
# SASS of the bf16 16-byte (5, 4) kernels of the first variant, for instruction counts.
if command -v cuobjdump > /dev/null; then
  cuobjdump -sass "$BUILD/grkan_cuda_$first.o" 2>/dev/null \
    | awk '/Function : /{p = ($0 ~ /StorageE1ELi8ELi5ELi4E/) || ($0 ~ /stage2/)} p' > "$OUT/sass_$first.txt"
  for k in fwd_kernel bwd_kernel; do
    echo "SASS opcode counts, $k bf16 VEC 8 (5,4):"
    awk -v k="$k" '/Function : /{p = ($0 ~ k)} p' "$OUT/sass_$first.txt" \
      | grep -oE '^\s+/\*[0-9a-f]{4}\*/\s+(@!?U?P[0-9T] )?[A-Z0-9]+' | awk '{print $NF}' \
      | sort | uniq -c | sort -rn | head -24 | tr '\n' ' '
    echo
  done | tee -a "$OUT/build.log"
fi

# ---- check -------------------------------------------------------------------------------
log "check (variant $first)"
"$BUILD/grkan_check" 2>&1 | tee "$OUT/check.log"
check_rc=${PIPESTATUS[0]}
echo "check exit code: $check_rc" | tee -a "$OUT/check.log"
# CHECK_ALL=1: the check for the other variants too (any of them may become the default).
if [ "${CHECK_ALL:-0}" = 1 ]; then
  for name in "${names[@]:1}"; do
    case "$name" in nos2|nobr) continue ;; esac  # benchmark-only variants compute wrong da/db
    echo "--- check variant $name" | tee -a "$OUT/check.log"
    "$BUILD/grkan_check_$name" 2>&1 | grep -E "FAILED|Failure|tests," | tee -a "$OUT/check.log"
    echo "check $name exit code: ${PIPESTATUS[0]}" | tee -a "$OUT/check.log"
  done
fi
if [ "${SKIP_SANITIZER:-0}" != 1 ] && command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    echo "--- compute-sanitizer --tool $tool (subset)" | tee -a "$OUT/check.log"
    KAT_TEST_FILTER="MisalignedPointers,WideFewRows,PerGroupNumerator,OtherDegrees,WidePartialTable" \
      timeout 75 compute-sanitizer --tool $tool --error-exitcode 9 "$BUILD/grkan_check" 2>&1 \
      | grep -vE "^\s+(case|rel err)" | tail -25 | tee -a "$OUT/check.log"
    echo "sanitizer $tool exit code: ${PIPESTATUS[0]}" | tee -a "$OUT/check.log"
  done
fi

# ---- bench -------------------------------------------------------------------------------
: > "$OUT/bench.log"
rm -f "$OUT/bench.csv"
for name in "${names[@]}"; do
  echo "--- variant $name" | tee -a "$OUT/bench.log"
  "$BUILD/grkan_bench_$name" "$BUILD/bench_$name.csv" "$name" 2>&1 | tee -a "$OUT/bench.log"
  if [ -f "$OUT/bench.csv" ]; then tail -n +2 "$BUILD/bench_$name.csv" >> "$OUT/bench.csv";
  else cp "$BUILD/bench_$name.csv" "$OUT/bench.csv"; fi
done

# ---- profile (NCU=1): one forward, one stage 1 and one stage 2 of bf16 (128,197,768) --------
if [ "${NCU:-0}" = 1 ] && command -v ncu > /dev/null; then
  NCU_ARGS="--clock-control none --section SpeedOfLight --section LaunchStats --section Occupancy \
    --section SchedulerStats --section WarpStateStats \
    --metrics gpu__time_duration.sum,sm__cycles_elapsed.avg.per_second,smsp__inst_executed.sum,dram__bytes_read.sum,dram__bytes_write.sum"
  : > "$OUT/ncu.txt"
  # the bench launches 520 forwards first, then bwd as (stage 1, stage 2) pairs
  for sel in "regex:grkan_fwd_kernel 100 1" "regex:grkan_bwd 600 2"; do
    set -- $sel
    echo "--- ncu -k $1 --launch-skip $2 --launch-count $3" >> "$OUT/ncu.txt"
    GRKAN_BENCH_ONLY=${NCU_ONLY:-bf16:768} timeout 120 ncu $NCU_ARGS -k "$1" --launch-skip "$2" \
      --launch-count "$3" "$BUILD/grkan_bench_$first" >> "$OUT/ncu.txt" 2>&1
    echo "ncu exit code $?" >> "$OUT/ncu.txt"
  done
  grep -E "^  [a-z_]+.*(grkan|stage2)|Duration|SM Frequency|DRAM Throughput|Compute \(SM\)|Issue Slots Busy|Issued Warp Per Scheduler|No Eligible|Active Warps Per Scheduler|Eligible Warps|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|gpu__time_duration|sm__cycles_elapsed|smsp__inst_executed|dram__bytes" "$OUT/ncu.txt"
fi

if [ "${SKIP_TORCH:-0}" != 1 ]; then
  echo "--- torch" | tee "$OUT/torch.log"
  PYTHONUNBUFFERED=1 timeout 240 python3 "$ROOT/bench/grkan_torch.py" "$OUT/torch.csv" 2>&1 | tee -a "$OUT/torch.log"
fi

echo "== summary"
grep -E "tests,|exit code|^--- check" "$OUT/check.log"
grep -E "^(--- variant|device|bf16|fp32)" "$OUT/bench.log"
exit $check_rc
