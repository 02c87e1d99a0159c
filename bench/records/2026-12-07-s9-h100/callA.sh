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
left=$(( 480 - ($(date +%s) - T0) ))
[ $left -gt 40 ] && { timeout -k 5 $(( left < 60 ? left : 60 )) data_bench /tmp/kat_jpegs --decode gpu --recipe deit --batches 80 --csv > $OUT/pipeline.csv 2>&1; st "pipeline rc $?"; }
# Where nvJPEG's time goes while training (kernels it launches, its synchronisations, frees): an
# nsys trace of a short kat train --decode gpu, summarised to text (if the machine has nsys).
NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
left=$(( 570 - ($(date +%s) - T0) ))
if [ -n "$NSYS" ] && [ $left -gt 70 ]; then
  DEIT="--crop rrc --hflip --randaug-n 2 --randaug-m 9 --reprob 0.25 --mixup 0.8 --cutmix 1.0"
  timeout -k 5 $(( left - 30 )) $NSYS profile -o /tmp/kat_nsys --force-overwrite true --trace cuda,osrt --sample none \
    kat train -m kat_tiny_patch16_224 --data folder:/tmp/kat_jpegs --device cuda --batch 256 --epochs 1 --warmup-epochs 0 \
    $DEIT --max-steps 30 --no-progress --out /tmp/kat_nsys_run --set num_classes=10 --decode gpu > $OUT/nsys_run.log 2>&1
  st "nsys rc $?"
  timeout -k 5 25 $NSYS stats --report cuda_api_sum,cuda_gpu_kern_sum,cuda_gpu_mem_time_sum --format csv /tmp/kat_nsys.nsys-rep \
    > $OUT/nsys_stats.csv 2>&1; st "nsys stats rc $?"
else
  st "nsys: '${NSYS:-not found}', $left s left"
fi
: # files/table.md comes back as it is (8 files at most)
[ -d $OUT/files/logs ] && (cd $OUT/files && tar czf logs.tgz logs && rm -rf logs)
