#!/usr/bin/env bash
# Same-machine A/B of two builds of kat on one GPU: throughput (kat bench, interleaved A B A B ...
# so clock drift hits both) and the training trajectory (`kat train` on the same data and seed:
# the metrics must be bitwise equal when a change is meant to keep the arithmetic).
#
# usage: bench/ab_gpu.sh DIR_A DIR_B        each DIR holds a `kat` executable (and lib/ from
#                                           bench/stage_gpu_carry.sh); A is the baseline
#   env: OUT (default out/ab_gpu), ROUNDS=3, ITERS=20, DATA=fashion-mnist or mnist:DIR, QUICK=1
# Output: $OUT/bench.csv (every run), $OUT/table.md (median img/s per case, B/A), $OUT/train_*.jsonl
set -uo pipefail
A=$(cd "$1" && pwd); B=$(cd "$2" && pwd)
OUT=${OUT:-out/ab_gpu}; ROUNDS=${ROUNDS:-3}; ITERS=${ITERS:-20}
mkdir -p "$OUT"
# Carried executables may come gzipped (kat.gz) and share one lib/ folder (either build's).
for d in "$A" "$B"; do [ -e "$d/kat.gz" ] && gunzip -f "$d/kat.gz"; for z in "$d"/lib/*.gz; do [ -e "$z" ] && gunzip -f "$z"; done; done
export LD_LIBRARY_PATH=$A/lib:$B/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
CASES=(
  "train -m kat_tiny_patch16_224 -b 256 --input device"
  "train -m kat_tiny_patch16_224 -b 256 --input host"
  "infer -m kat_tiny_patch16_224 -b 256"
  "train -m deit_tiny_patch16_224 -b 256 --input device"
  "train -m kat_small_patch16_224 -b 256 --input device"
  "infer -m kat_small_patch16_224 -b 256"
)
# QUICK=1: the kat_tiny cases and kat_small training only; QUICK=2: kat_tiny training alone (a short
# device lease).
[ "${QUICK:-0}" = 1 ] && CASES=("${CASES[@]:0:3}" "${CASES[4]}")
[ "${QUICK:-0}" = 2 ] && CASES=("${CASES[0]}")
echo "case,build,img_per_s" > "$OUT/bench.csv"
for c in "${CASES[@]}"; do
  for r in $(seq "$ROUNDS"); do
    for which in A B; do
      dir=$A; [ $which = B ] && dir=$B
      line=$(timeout 120 "$dir/kat" bench $c --iters "$ITERS" --device cuda --csv 2>/dev/null | tail -1)
      # img_per_s is the third field from the end (older binaries put a comma inside the "where"
      # field for --input host, so count from the end).
      echo "\"$c\",$which,$(echo "$line" | awk -F, '{print $(NF-2)}')" >> "$OUT/bench.csv"
    done
  done
done
python3 - "$OUT/bench.csv" > "$OUT/table.md" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
cases = list(dict.fromkeys(r["case"] for r in rows))
print("| case | A img/s (median) | B img/s (median) | B/A | spread A | spread B |")
print("|---|---|---|---|---|---|")
for c in cases:
    v = {w: [float(r["img_per_s"] or "nan") for r in rows if r["case"] == c and r["build"] == w] for w in "AB"}
    ma, mb = statistics.median(v["A"]), statistics.median(v["B"])
    sp = lambda x: f"{min(x):.0f}-{max(x):.0f}"
    print(f"| {c} | {ma:.0f} | {mb:.0f} | {mb/ma:.4f} | {sp(v['A'])} | {sp(v['B'])} |")
PY
cat "$OUT/table.md"
# Trajectory: the default model, 2 epochs, on the GPU; metrics compared field by field.
DATA=${DATA:-fashion-mnist}
for which in A B; do
  dir=$A; [ $which = B ] && dir=$B
  rm -rf "/tmp/ab_train_$which"
  timeout 120 "$dir/kat" train --data "$DATA" --epochs 2 --device cuda --out "/tmp/ab_train_$which" > "$OUT/train_$which.log" 2>&1
  cp "/tmp/ab_train_$which/metrics.jsonl" "$OUT/train_$which.jsonl" 2>/dev/null
done
python3 - "$OUT/train_A.jsonl" "$OUT/train_B.jsonl" <<'PY'
import json, sys
def load(p):
    out = []
    for l in open(p):
        d = json.loads(l)
        out.append({k: v for k, v in d.items() if not any(s in k for s in ("time", "img_per_s", "sec", "eta", "elapsed"))})
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
same = a == b
print(f"trajectory: {len(a)} vs {len(b)} records, {'bitwise equal' if same else 'DIFFERENT'}")
if not same:
    for x, y in zip(a, b):
        if x != y: print("first difference:\n A", x, "\n B", y); break
PY
