#!/usr/bin/env bash
# Session 11, FP8 on the GPU (issue #13 item 3), <= 590 s, files in $OUT:
#  1. the accuracy guard: the README's default run (kat_micro_patch4_28, Fashion-MNIST, 6 epochs)
#     on the GPU in bf16 (auto) and fp8, seeds 0-4, interleaved      -> guard.csv, guard_logs.tgz
#  2. bench/fp8_ab.sh without its tests (they ran in call 1): fp8_bench and the kat_tiny / small /
#     base train and infer rows, bf16 vs fp8 interleaved               -> tests.log fp8_bench.log bench.csv table.md
#   run(command="LIMIT=580 bash bench/records/2026-12-08-s11-h100/call3.sh", carry=[".carry/gpurun_fp8", ".carry/fm_full"] with GPURUN=.carry/gpurun_fp8)
set -u
source ${GPURUN:-.carry/gpurun}/run_env.sh
T0=$(date +%s)
G=/tmp/guard
bash bench/fp8_guard.sh $OUT/guard.csv .carry/fm_full $G "0 1 2 3 4" 60
# kat eval --precision on the GPU (new): a bf16-trained and an fp8-trained checkpoint, each evaluated
# in bf16 (auto), fp8 and fp32.
for run in auto-s0 fp8-s0; do
  for p in auto fp8 fp32; do
    echo "eval $run --precision $p: $(timeout -k 5 60 kat eval --no-progress --device cuda --precision $p \
      --data fashion-mnist:.carry/fm_full -w $G/$run/best.safetensors 2>&1 | grep -E 'top-1|rror' | head -2)" | tee -a $OUT/guard.csv
  done
done
(cd /tmp && tar czf $OUT/guard_logs.tgz guard)
echo "guard done at $(( $(date +%s) - T0 )) s"
left=$(( ${LIMIT:-580} - ($(date +%s) - T0) ))
SKIP_TESTS=1 ROUNDS=2 BUDGET=$(( left - 150 )) timeout -k 5 $left bash bench/fp8_ab.sh
echo "all done at $(( $(date +%s) - T0 )) s"
