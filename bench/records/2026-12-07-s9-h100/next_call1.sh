#!/usr/bin/env bash
# For the next session's first device call (~8 min; <= 6 files in $OUT): the whole GPU test suite
# with session 9's changes (attention auto = cuDNN by default, the YUV conversion kernel and path,
# SIGUSR1 phases), then #11's A/B with the new rows. Stage first:
#   CUDNN_ROOT=... CUDNN_FRONTEND_INCLUDE_DIR=... bash bench/stage_gpu_carry.sh kat kat_gpu_tests data_bench op_bench
#   run(command="bash bench/records/2026-12-07-s9-h100/next_call1.sh; cat $OUT/steps.txt $OUT/files/table.md",
#       carry=[".carry/gpurun"])
set -u
source .carry/gpurun/run_env.sh
T0=$(date +%s)
st() { echo "$1 at $(( $(date +%s) - T0 ))s" >> $OUT/steps.txt; }
timeout -k 5 240 kat_gpu_tests > $OUT/gpu_tests.log 2>&1; st "gpu tests rc $?"
grep -E "^\[  FAILED  \]|PASSED|tests ran|max \|gpu" $OUT/gpu_tests.log >> $OUT/steps.txt
VARIANTS=$'default||--decode gpu\nyuv|KAT_NVJPEG_OUTPUT=yuv|--decode gpu\nkept|KAT_NVJPEG_ALLOCATOR=kept|--decode gpu\nyuv_kept|KAT_NVJPEG_OUTPUT=yuv KAT_NVJPEG_ALLOCATOR=kept|--decode gpu\nnv12|KAT_NVJPEG_OUTPUT=nv12|--decode gpu\ndefault_again||--decode gpu\nyuv_again|KAT_NVJPEG_OUTPUT=yuv|--decode gpu' \
  TESTS=0 OUT=$OUT/files timeout -k 10 330 bash bench/train_from_files_ab.sh > $OUT/files_stdout.log 2>&1
st "files rc $?"
