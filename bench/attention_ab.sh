#!/usr/bin/env bash
# A/B of the attention implementation on one GPU (issue #13, item 2): cuDNN's fused attention (the
# cudnn-frontend SDPA graphs, src/ops/cuda/attention_cudnn.h) against our kernels, one binary,
# switched by KAT_ATTENTION=ours|cudnn (src/ops/attention_backend.h).
#  1. correctness: kat_gpu_tests --gtest_filter='CudnnAttention.*:ModelCuda.CudnnAttentionVsCpu'
#     (the op against the CPU reference, refusals, the whole model with cuDNN attention);
#  2. the op alone: op_bench perf attention_cudnn (ours and cuDNN, forward + backward, B 256 / 1024);
#  3. the model: kat bench train and infer, kat_tiny at batch 256 and 1024 and kat_small at 256, ours
#     and cuDNN interleaved (ours, cudnn, ours, cudnn, ... so clock drift hits both), ROUNDS each;
#     the table gives the medians and says what really ran (a cuDNN that refuses falls back to ours).
#
# usage, on the GPU machine from the repository root, with the binaries of
#   CUDNN_ROOT=... CUDNN_FRONTEND_INCLUDE_DIR=... bench/stage_gpu_carry.sh kat kat_gpu_tests op_bench
# carried:
#   source .carry/gpurun/run_env.sh && bash bench/attention_ab.sh
# env: BUDGET (seconds for the model rows; 0 = no limit; rounds run outermost, so a cut keeps pairs),
#      OUT (default out/attention_ab; $OUT of the device tool works), ROUNDS=3, ITERS=10 (timed steps
#      per run, median), SKIP_TESTS=1 (benchmarks only). About 3-4 minutes on an H100.
# Output: $OUT/tests.log, $OUT/op_bench.log, $OUT/bench.csv (every run), $OUT/bench_stderr.log (the
# engine's notes: the cuDNN version, refusals), $OUT/table.md.
set -uo pipefail
OUT=${OUT:-out/attention_ab}
ROUNDS=${ROUNDS:-3}
ITERS=${ITERS:-10}
mkdir -p "$OUT"
command -v kat > /dev/null || { echo "kat is not on PATH: source .carry/gpurun/run_env.sh first" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  if command -v kat_gpu_tests > /dev/null; then
    timeout 300 kat_gpu_tests --gtest_filter='CudnnAttention.*:ModelCuda.CudnnAttentionVsCpu' > "$OUT/tests.log" 2>&1
    echo "tests: exit $? (log $OUT/tests.log)"
    grep -E "cuDNN [0-9]|attention (ours|cudnn)|refused|FAILED|SKIPPED|PASSED|OK \]" "$OUT/tests.log" | head -40
  else
    echo "kat_gpu_tests not carried: tests skipped"
  fi
fi

if command -v op_bench > /dev/null; then
  timeout 180 op_bench perf "attention_cudnn" > "$OUT/op_bench.log" 2>&1
  echo "op_bench: exit $?"
  grep -E "perf|refused" "$OUT/op_bench.log"
fi

CASES=(
  "train -m kat_tiny_patch16_224 -b 256"
  "train -m kat_tiny_patch16_224 -b 1024"
  "train -m kat_small_patch16_224 -b 256"
  "infer -m kat_tiny_patch16_224 -b 256"
  "infer -m kat_tiny_patch16_224 -b 1024"
  "infer -m kat_small_patch16_224 -b 256"
)
echo "case,asked,ran,img_per_s,seconds" > "$OUT/bench.csv"
: > "$OUT/bench_stderr.log"
# Rounds outermost, so a cut (BUDGET seconds for the model rows: no new run starts past it) still
# leaves every case with an ours/cudnn pair. Each run's wall time goes into bench.csv.
BUDGET=${BUDGET:-0}
t_rows=$(date +%s)
for r in $(seq "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    for att in ours cudnn; do
      if [ "$BUDGET" -gt 0 ] && [ $(( $(date +%s) - t_rows )) -ge "$BUDGET" ]; then
        echo "BUDGET of $BUDGET s spent: round $r of $ROUNDS, case '$c' and later not run" | tee -a "$OUT/bench_stderr.log"
        break 3
      fi
      t_run=$(date +%s)
      # shellcheck disable=SC2086  # $c is the argument list
      line=$(KAT_ATTENTION=$att timeout -k 10 120 kat bench $c --iters "$ITERS" --device cuda --csv \
             2>> "$OUT/bench_stderr.log" | tail -1)
      # CSV: mode,model,batch,where,img_per_s,ms_per_iter,device_mib; `where` ends in "attention X"
      # when cuDNN was asked for (X: what ran).
      ran=$(echo "$line" | awk -F, '{print $4}' | sed -n 's/.*attention \([a-z]*\).*/\1/p')
      echo "\"$c\",$att,${ran:-ours},$(echo "$line" | awk -F, '{print $(NF-2)}'),$(( $(date +%s) - t_run ))" >> "$OUT/bench.csv"
    done
  done
done
sort -u "$OUT/bench_stderr.log" | head -20

python3 - "$OUT/bench.csv" > "$OUT/table.md" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
cases = list(dict.fromkeys(r["case"] for r in rows))
print("| case | ours img/s (median) | cudnn img/s (median) | cudnn/ours | spread ours | spread cudnn | cudnn ran |")
print("|---|---|---|---|---|---|---|")
for c in cases:
    v = {a: [float(r["img_per_s"] or "nan") for r in rows if r["case"] == c and r["asked"] == a] for a in ("ours", "cudnn")}
    ran = sorted({r["ran"] for r in rows if r["case"] == c and r["asked"] == "cudnn"})
    if not v["ours"] or not v["cudnn"]:  # cut by BUDGET between the two
        print(f"| {c} | {v['ours'] or '-'} | {v['cudnn'] or '-'} | - | | | {'/'.join(ran)} |")
        continue
    mo, mc = statistics.median(v["ours"]), statistics.median(v["cudnn"])
    sp = lambda x: f"{min(x):.0f}-{max(x):.0f}"
    print(f"| {c} | {mo:.0f} | {mc:.0f} | {mc / mo:.3f} | {sp(v['ours'])} | {sp(v['cudnn'])} | {'/'.join(ran)} |")
PY
cat "$OUT/table.md"
