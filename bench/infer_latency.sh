#!/usr/bin/env bash
# Serving latency (issue #13 item 1): ms per inference forward at batch 1, 8 and 32, kat (eager and
# --cuda-graph) beside timm DeiT (eager, torch.compile, torch.compile mode="reduce-overhead"),
# same GPU, same call. Target: kat <= 0.5x the best PyTorch mode at each batch.
#
#   after bench/stage_gpu_carry.sh kat, on the GPU machine:
#   source .carry/gpurun/run_env.sh && OUT=$OUT bash bench/infer_latency.sh
# env: BATCHES (1 8 32), MODELS (kat_tiny_patch16_224 deit_tiny_patch16_224), TORCH_MODELS
#      (deit_tiny_patch16_224), ITERS (50), OUT (out/infer_latency), TORCH=0 (kat only).
# Output: $OUT/kat.csv, $OUT/torch.csv, $OUT/table.md (also on stdout).
set -uo pipefail
cd "$(dirname "$0")/.."
BATCHES=${BATCHES:-1 8 32}
MODELS=${MODELS:-kat_tiny_patch16_224 deit_tiny_patch16_224}
TORCH_MODELS=${TORCH_MODELS:-deit_tiny_patch16_224}
ITERS=${ITERS:-50}
OUT=${OUT:-out/infer_latency}
mkdir -p "$OUT"
command -v kat > /dev/null || { echo "kat is not on PATH: source .carry/gpurun/run_env.sh first" >&2; exit 2; }
: > "$OUT/kat.csv"
for m in $MODELS; do
  for b in $BATCHES; do
    for mode in eager graph; do
      flag=""; [ "$mode" = graph ] && flag=--cuda-graph
      # CSV: mode,model,batch,where,img_per_s,ms_per_iter,device_mib
      line=$(timeout -k 10 120 kat bench infer -m "$m" -b "$b" --iters "$ITERS" --device cuda $flag --csv 2>> "$OUT/kat.err" | tail -1)
      echo "$m,$b,$mode,$(echo "$line" | awk -F, '{print $6 "," $4}')" >> "$OUT/kat.csv"
    done
  done
done
: > "$OUT/torch.csv"
if [ "${TORCH:-1}" = 1 ]; then
  timeout 480 python3 bench/torch_infer_latency.py --models "$(echo $TORCH_MODELS | tr ' ' ,)" \
    --batches "$(echo $BATCHES | tr ' ' ,)" --iters "$ITERS" 2> "$OUT/torch.err" | grep '^torch_latency' > "$OUT/torch.csv"
fi
python3 - "$OUT/kat.csv" "$OUT/torch.csv" <<'PY' | tee "$OUT/table.md"
import csv, sys
kat = {}
for m, b, mode, ms, where in csv.reader(open(sys.argv[1])):
    kat[(m, int(b), mode)] = (ms, where)
torch = {}
for _, m, b, mode, ms in csv.reader(open(sys.argv[2])):
    if ms != "failed":
        torch.setdefault(int(b), {})[mode] = float(ms)
print("| model | batch | kat eager ms | kat graph ms | PyTorch best ms (mode) | best kat / best PyTorch (target <= 0.5) |")
print("|---|---:|---:|---:|---|---:|")
for (m, b, mode) in sorted({(m, b, "x") for (m, b, _) in kat}):
    e = kat.get((m, b, "eager"), ("", ""))[0]
    g, where = kat.get((m, b, "graph"), ("", ""))
    if "graph-failed" in where:
        g = f"{g} (capture failed: eager)"
    t = torch.get(b, {})
    best_t = min(t.items(), key=lambda kv: kv[1]) if t else None
    ours = [float(v) for v in (e, g.split()[0] if g else "") if v]
    ratio = f"{min(ours) / best_t[1]:.2f}" if ours and best_t else "-"
    tb = f"{best_t[1]:.3f} ({best_t[0]})" if best_t else "-"
    print(f"| {m} | {b} | {e} | {g} | {tb} | {ratio} |")
PY
