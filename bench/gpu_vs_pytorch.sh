#!/usr/bin/env bash
# Our engine vs PyTorch/timm on one GPU, in one invocation: `kat bench train|infer --device cuda`
# for kat_{SIZE}_patch16_224 and deit_{SIZE}_patch16_224 (synthetic 224^2 data, bf16, drop-path as
# the configs), then timm deit_{SIZE}_patch16_224 eager and torch.compile (bench/torch_gpu_bench.py),
# and one table: img/s, device memory, ours / PyTorch.
#
# usage: bench/gpu_vs_pytorch.sh [path/to/kat]
#   env: BATCH=256, or BATCHES="256 512 1024" (a sweep: every batch for both sides, then the best of
#        each side per model and mode, bench/best_of_batches.py), ITERS=20, SIZES="tiny small base",
#        COMPILE=1 (0: eager only), OUT=out/gpu_vs_pytorch
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KAT=${1:-$ROOT/build/kat}
OUT=${OUT:-$ROOT/out/gpu_vs_pytorch}
BATCHES=${BATCHES:-${BATCH:-256}}
ITERS=${ITERS:-20}
SIZES=${SIZES:-tiny small base}
COMPILE=${COMPILE:-1}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
models=$(for s in $SIZES; do printf 'deit_%s_patch16_224,' "$s"; done)
flags=()
[ "$COMPILE" = 1 ] && flags+=(--compile)
for B in $BATCHES; do
  echo "mode,model,batch,where,img_per_s,ms_per_iter,device_mib" > "$OUT/ours_b$B.csv"
  for size in $SIZES; do
    for arch in kat deit; do
      for mode in train infer; do
        "$KAT" bench "$mode" -m "${arch}_${size}_patch16_224" -b "$B" --iters "$ITERS" --device cuda --csv |
          tee -a "$OUT/ours_b$B.csv" || echo "  (kat ${arch}_${size} $mode batch $B failed)" >&2
      done
    done
  done
  python3 "$ROOT/bench/torch_gpu_bench.py" --models "$models" --batch "$B" --iters "$ITERS" "${flags[@]}" \
    --ours "$OUT/ours_b$B.csv" --csv "$OUT/torch_b$B.csv" | tee "$OUT/table_b$B.md"
done
# One batch: that table is the result; a sweep: the best batch of each side, side by side.
set -- $BATCHES
if [ $# -gt 1 ]; then
  python3 "$ROOT/bench/best_of_batches.py" "$OUT" | tee "$OUT/table.md"
else
  cp "$OUT/table_b$1.md" "$OUT/table.md"
fi
