#!/usr/bin/env bash
# One device call's worth of GPU checks (the device tool's `run`), after `bench/stage_gpu_carry.sh`:
#   run(command="bash bench/gpu_checks.sh", carry=[".carry/gpurun", ".carry/fm_small"], kind=...)
# .carry/fm_small: Fashion-MNIST's t10k files, also under the train-* names (8.5 MB; the trainer
# tests need a dataset and the full one does not fit the carry beside the binaries).
# Runs: every GPU test (the data-parallel one only with 2+ GPUs), kat_tiny training throughput with
# the batch resident and with host uploads, and on 2+ GPUs the data-parallel throughput.
# Logs under $OUT (default ./out/gpu_checks).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu_checks}
mkdir -p "$OUT"
source .carry/gpurun/run_env.sh
export KAT_TEST_FMNIST=${KAT_TEST_FMNIST:-$PWD/.carry/fm_small}
ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
echo "GPUs: $ngpu; NCCL: $(ldd .carry/gpurun/kat | awk "/libnccl/ {print \$3}")" | tee "$OUT/summary.txt"
timeout 240 kat_gpu_tests > "$OUT/gpu_tests.txt" 2>&1
echo "kat_gpu_tests exit $?: $(tail -1 "$OUT/gpu_tests.txt")" | tee -a "$OUT/summary.txt"
grep -E "^\[  FAILED|^\[  SKIPPED \]" "$OUT/gpu_tests.txt" | tee -a "$OUT/summary.txt"
for input in device host; do
  timeout 60 kat bench train -b 256 --iters 10 --device cuda --input "$input" 2>&1 | tail -1 | tee -a "$OUT/summary.txt"
done
if [ "$ngpu" -ge 2 ]; then
  # Data-parallel scaling: the same per-GPU batch (256) on 1 and on all GPUs, tiny and small.
  devs=$(seq -s, 0 $((ngpu - 1)))
  for model in kat_tiny_patch16_224 kat_small_patch16_224; do
    timeout 60 kat bench train -m $model -b 256 --iters 10 --device cuda --input host 2>&1 | tail -1 | tee -a "$OUT/summary.txt"
    timeout 90 kat bench train -m $model -b $((256 * ngpu)) --iters 10 --device "cuda:$devs" 2>&1 | tail -1 | tee -a "$OUT/summary.txt"
  done
fi
