#!/usr/bin/env bash
# session 9, device call A (~6 min): the new GPU tests (CUDA-graph inference, nvJPEG kept memory),
# then #11's A/B of kat train from JPEG files (bench/train_from_files_ab.sh). <= 8 files in $OUT.
set -u
source .carry/gpurun/run_env.sh
T0=$(date +%s)
st() { echo "$1 at $(( $(date +%s) - T0 ))s" >> $OUT/steps.txt; }
timeout -k 5 150 kat_gpu_tests --gtest_filter='ModelCuda.CudaGraph*' > $OUT/new_tests.log 2>&1; st "graph tests rc $?"
grep -E "FAILED|OK \]|PASSED" $OUT/new_tests.log >> $OUT/steps.txt
OUT=$OUT/files RUN_TIMEOUT=50 timeout -k 10 400 bash bench/train_from_files_ab.sh > $OUT/files_stdout.log 2>&1; st "files rc $?"
left=$(( 560 - ($(date +%s) - T0) ))
[ $left -gt 40 ] && { timeout -k 5 $(( left < 60 ? left : 60 )) data_bench /tmp/kat_jpegs --decode gpu --recipe deit --batches 80 --csv > $OUT/pipeline.csv 2>&1; st "pipeline rc $?"; }
[ -f $OUT/files/table.md ] && cp $OUT/files/table.md $OUT/files.md
[ -d $OUT/files/logs ] && (cd $OUT/files && tar czf logs.tgz logs && rm -rf logs)
