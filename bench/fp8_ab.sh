#!/usr/bin/env bash
# A/B of --precision fp8 against bf16 on one GPU (issue #13, item 3): the FP8 linear layers
# (KatModelCuda::enable_fp8: qkv / proj / fc1 / fc2 as cuBLASLt FP8 GEMMs, src/ops/fp8.h's recipe)
# against the bf16 model, one binary, switched by `kat bench --precision fp8`.
#  1. correctness: kat_gpu_tests --gtest_filter='ModelCuda.Fp8*:TrainCuda.Fp8*:OpHarness.Fp8:OpArgs.Fp8*'
#     (the whole FP8 model against the CPU emulation, its history, a training run resumed bitwise,
#     the ops);
#  2. the ops alone: fp8_bench (bf16 vs FP8 GEMMs per kat model / layer, the casts, Amdahl per model);
#  3. the model: kat bench train and infer, kat_tiny / kat_small / kat_base, bf16 and fp8 interleaved
#     (bf16, fp8, bf16, fp8, ... so clock drift hits both), ROUNDS each; the table gives the medians.
# Needs compute capability 8.9+ (H100 / H200): elsewhere every fp8 run is refused with a kat::Error.
#
# usage, on the GPU machine from the repository root, with the binaries of
#   bench/stage_gpu_carry.sh kat kat_gpu_tests fp8_bench
# carried, and .carry/fm_small (Fashion-MNIST's t10k files, see bench/gpu_checks.sh) for the resume
# test (the device tool: carry=[".carry/gpurun", ".carry/fm_small"]):
#   source .carry/gpurun/run_env.sh && bash bench/fp8_ab.sh
# env: BUDGET (seconds for the model rows; 0 = no limit; rounds run outermost, so a cut keeps pairs),
#      OUT (default out/fp8_ab; $OUT of the device tool works), ROUNDS=3, ITERS=10 (timed steps per
#      run, median), TRAIN_BATCH=128, INFER_BATCH=256, SKIP_TESTS=1 (benchmarks only),
#      KAT_TEST_FMNIST (Fashion-MNIST for TrainCuda.Fp8ResumeBitwise, default .carry/fm_small;
#      the test skips without it).
#      About 6-8 minutes on an H100 (kat_base dominates).
# Output (4 files): $OUT/tests.log (the GPU, the tests, the engine's notes on stderr),
# $OUT/fp8_bench.log, $OUT/bench.csv (every run with its wall time), $OUT/table.md.
set -uo pipefail
OUT=${OUT:-out/fp8_ab}
ROUNDS=${ROUNDS:-3}
ITERS=${ITERS:-10}
TRAIN_BATCH=${TRAIN_BATCH:-128}
INFER_BATCH=${INFER_BATCH:-256}
mkdir -p "$OUT"
command -v kat > /dev/null || { echo "kat is not on PATH: source .carry/gpurun/run_env.sh first" >&2; exit 2; }
LOG="$OUT/tests.log"
export KAT_TEST_FMNIST=${KAT_TEST_FMNIST:-$PWD/.carry/fm_small}
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,compute_cap --format=csv,noheader | tee "$LOG"

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  if command -v kat_gpu_tests > /dev/null; then
    t0=$(date +%s)
    timeout 400 kat_gpu_tests --gtest_filter='ModelCuda.Fp8*:TrainCuda.Fp8*:OpHarness.Fp8:OpArgs.Fp8*' >> "$LOG" 2>&1
    echo "tests: exit $?, $(( $(date +%s) - t0 )) s (log $LOG)"
    grep -E "fp8|FP8|history|FAILED|SKIPPED|PASSED|OK \]|Failure|Expected|Which is" "$LOG" | head -60
  else
    echo "kat_gpu_tests not carried: tests skipped"
  fi
fi

if command -v fp8_bench > /dev/null; then
  t0=$(date +%s)
  timeout 240 fp8_bench > "$OUT/fp8_bench.log" 2>&1
  echo "fp8_bench: exit $?, $(( $(date +%s) - t0 )) s"
  grep -iE "model|summary|speedup|amdahl|needs" "$OUT/fp8_bench.log" | head -30
fi

CASES=(
  "train -m kat_tiny_patch16_224 -b $TRAIN_BATCH"
  "train -m kat_small_patch16_224 -b $TRAIN_BATCH"
  "train -m kat_base_patch16_224 -b $TRAIN_BATCH"
  "infer -m kat_tiny_patch16_224 -b $INFER_BATCH"
  "infer -m kat_small_patch16_224 -b $INFER_BATCH"
  "infer -m kat_base_patch16_224 -b $INFER_BATCH"
)
echo "case,precision,where,img_per_s,ms_per_iter,device_mib,seconds" > "$OUT/bench.csv"
echo "---- kat bench stderr ----" >> "$LOG"
# Rounds outermost, so a cut (BUDGET seconds for the model rows: no new run starts past it) still
# leaves every case with a bf16/fp8 pair. Each run's wall time goes into bench.csv.
BUDGET=${BUDGET:-0}
t_rows=$(date +%s)
for r in $(seq "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    for prec in auto fp8; do
      if [ "$BUDGET" -gt 0 ] && [ $(( $(date +%s) - t_rows )) -ge "$BUDGET" ]; then
        echo "BUDGET of $BUDGET s spent: round $r of $ROUNDS, case '$c' and later not run" | tee -a "$LOG"
        break 3
      fi
      t_run=$(date +%s)
      # shellcheck disable=SC2086  # $c is the argument list
      line=$(timeout -k 10 180 kat bench $c --iters "$ITERS" --device cuda --precision "$prec" --csv \
             2>> "$LOG" | tail -1)
      # CSV: mode,model,batch,where,img_per_s,ms_per_iter,device_mib (`where`: "cuda bf16" / "cuda fp8").
      name=$([ "$prec" = auto ] && echo bf16 || echo fp8)
      echo "\"$c\",$name,$(echo "$line" | awk -F, '{print $4","$5","$6","$7}'),$(( $(date +%s) - t_run ))" \
        >> "$OUT/bench.csv"
    done
  done
done
grep -vE "^\[|^$" "$LOG" | sed -n '/---- kat bench stderr/,$p' | sort -u | head -20

python3 - "$OUT/bench.csv" > "$OUT/table.md" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
cases = list(dict.fromkeys(r["case"] for r in rows))
def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")
print("| case | bf16 img/s (median) | fp8 img/s (median) | fp8/bf16 | spread bf16 | spread fp8 | MiB bf16 | MiB fp8 | s per run |")
print("|---|---|---|---|---|---|---|---|---|")
for c in cases:
    v = {p: [num(r["img_per_s"]) for r in rows if r["case"] == c and r["precision"] == p] for p in ("bf16", "fp8")}
    mib = {p: max([num(r["device_mib"]) for r in rows if r["case"] == c and r["precision"] == p] or [float("nan")]) for p in ("bf16", "fp8")}
    secs = [num(r["seconds"]) for r in rows if r["case"] == c]
    v = {p: [x for x in xs if x == x] for p, xs in v.items()}  # a failed run (empty line) is NaN
    if not v["bf16"] or not v["fp8"]:
        print(f"| {c} | {v['bf16'] or '-'} | {v['fp8'] or '-'} | - | | | {mib['bf16']:.0f} | {mib['fp8']:.0f} | {max(secs):.0f} |")
        continue
    mb, mf = statistics.median(v["bf16"]), statistics.median(v["fp8"])
    sp = lambda x: f"{min(x):.0f}-{max(x):.0f}"
    print(f"| {c} | {mb:.0f} | {mf:.0f} | {mf / mb:.3f} | {sp(v['bf16'])} | {sp(v['fp8'])} | {mib['bf16']:.0f} | {mib['fp8']:.0f} | {max(secs):.0f} |")
PY
cat "$OUT/table.md"
