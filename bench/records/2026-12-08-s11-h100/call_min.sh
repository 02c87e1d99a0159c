#!/usr/bin/env bash
# Session 11's one-call fallback (<= 590 s with SUITE=1, ~420 s without; <= 8 files in $OUT) when
# little device time is left: the GPU tests (SUITE=1: the whole suite; else the FP8 and YUV ones),
# the FP8 accuracy guard (3 seeds), kat_tiny bf16 vs fp8 rows, and #11's A/B (default, yuv,
# cpu_share_0.25; with SUITE=1 also high_priority).
#   run(command="bash bench/records/2026-12-08-s11-h100/call_min.sh", carry=[".carry/gpurun_min", ".carry/fm_full"]) with GPURUN=.carry/gpurun_min
set -u
source ${GPURUN:-.carry/gpurun}/run_env.sh
export KAT_TEST_FMNIST=$PWD/.carry/fm_full
T0=$(date +%s)
st() { echo "$1 at $(( $(date +%s) - T0 ))s" | tee -a $OUT/steps.txt; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/steps.txt
(python3 bench/make_jpegs.py /tmp/kat_jpegs --train 13000 --val 256 > /tmp/make_jpegs.log 2>&1) &
if [ "${SUITE:-0}" = 1 ]; then
  timeout -k 5 230 kat_gpu_tests > $OUT/gpu_tests.log 2>&1
else
  timeout -k 5 100 kat_gpu_tests --gtest_filter='ModelCuda.Fp8*:TrainCuda.Fp8*:OpHarness.Fp8:OpArgs.Fp8*:GpuDataDir.Ycbcr*:GpuDataDir.Yuv*' > $OUT/gpu_tests.log 2>&1
fi
st "gpu tests rc $?"; grep -E "^\[  FAILED  \]|PASSED|tests ran" $OUT/gpu_tests.log | tee -a $OUT/steps.txt
bash bench/fp8_guard.sh $OUT/guard.csv .carry/fm_full /tmp/g "0 1 2" 40
st "guard"
for r in $(seq $([ "${SUITE:-0}" = 1 ] && echo 1 || echo 2)); do for p in auto fp8; do for m in train infer; do
  echo "$m $p: $(timeout -k 5 60 kat bench $m -m kat_tiny_patch16_224 -b 256 --iters 10 --device cuda --precision $p --csv 2>&1 | tail -1)" | tee -a $OUT/fp8_rows.txt
done; done; done
st "fp8 rows"
wait
V=$'default||--decode gpu\nyuv|KAT_NVJPEG_OUTPUT=yuv|--decode gpu\ncpu_share_0.25||--decode gpu --decode-cpu-share 0.25'
[ "${SUITE:-0}" = 1 ] && V+=$'\nhigh_priority||--decode gpu --decode-priority high'
END=$([ "${SUITE:-0}" = 1 ] && echo 585 || echo 410)
VARIANTS="$V" TESTS=0 RUN_TIMEOUT=40 OUT=$OUT/files timeout -k 10 $(( END - ($(date +%s) - T0) )) bash bench/train_from_files_ab.sh > $OUT/files_stdout.log 2>&1
st "files rc $?"
cat $OUT/files/table.md 2>/dev/null | cut -c1-700
