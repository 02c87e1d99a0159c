#!/usr/bin/env bash
# Session 11's first device call (<= 590 s, 6 files in $OUT): the whole GPU suite (FP8 on a GPU for
# the first time, the YUV kernels, attention auto = cuDNN), then #11's A/B of `kat train --decode gpu` from 13,000 JPEGs (SIGUSR1 phases + --data-timeout 20
# name the stage of any stall). Stage first (dev VM):
#   CUDNN_ROOT=... CUDNN_FRONTEND_INCLUDE_DIR=... bash bench/stage_gpu_carry.sh kat kat_gpu_tests data_bench op_bench fp8_bench
#   run(command="bash bench/records/2026-12-08-s11-h100/call1.sh", carry=[".carry/gpurun", ".carry/fm_small"])
set -u
source .carry/gpurun/run_env.sh
export KAT_TEST_FMNIST=$PWD/.carry/fm_small
T0=$(date +%s)
st() { echo "$1 at $(( $(date +%s) - T0 ))s" | tee -a $OUT/steps.txt; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $OUT/steps.txt
# JPEGs made in the background while the tests run (16 cores; the tests use the GPU).
(python3 bench/make_jpegs.py /tmp/kat_jpegs --train 13000 --val 256 > $OUT/make_jpegs.log 2>&1; echo done >> $OUT/make_jpegs.log) &
timeout -k 5 230 kat_gpu_tests > $OUT/gpu_tests.log 2>&1; st "gpu tests rc $?"
grep -E "^\[  FAILED  \]|PASSED|tests ran" $OUT/gpu_tests.log | tee -a $OUT/steps.txt
wait
VARIANTS=$'default||--decode gpu\nyuv|KAT_NVJPEG_OUTPUT=yuv|--decode gpu\nhigh_priority||--decode gpu --decode-priority high\ncpu_share_0.25||--decode gpu --decode-cpu-share 0.25\ndefault_again||--decode gpu' \
  TESTS=0 RUN_TIMEOUT=50 OUT=$OUT/files timeout -k 10 $(( 585 - ($(date +%s) - T0) )) bash bench/train_from_files_ab.sh > $OUT/files_stdout.log 2>&1
st "files rc $?"
cat $OUT/files/table.md 2>/dev/null | cut -c1-600
