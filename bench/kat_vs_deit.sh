#!/usr/bin/env bash
# KAT vs its DeiT twin on Fashion-MNIST with the default recipe (`kat train` defaults), 3 seeds
# each, same budget (the default 6 epochs). Prints one line per run and a summary (mean ± std of final test
# top-1).   bench/kat_vs_deit.sh [OUTDIR] [SEEDS...]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/kat_vs_deit}; shift || true
SEEDS=${*:-0 1 2}
mkdir -p "$OUT"
for model in kat_micro_patch4_28 deit_micro_patch4_28; do
  for s in $SEEDS; do
    start=$(date +%s)
    line=$(build/kat train --model $model --seed "$s" --out "$OUT/${model}_s$s" --no-progress 2>/dev/null | grep "final test top-1")
    echo "$model seed $s: $line ($(( $(date +%s) - start )) s)" | tee -a "$OUT/summary.txt"
  done
done
python3 - "$OUT/summary.txt" <<'PY'
import re, statistics, sys, collections
acc = collections.defaultdict(list)
for l in open(sys.argv[1]):
    m = re.match(r"(\S+) seed \d+: final test top-1: ([\d.]+)%", l)
    if m: acc[m.group(1)].append(float(m.group(2)))
for k, v in acc.items():
    print(f"{k:24s} n={len(v)} mean {statistics.mean(v):.2f}%  std {statistics.pstdev(v):.2f}  runs {v}")
PY
