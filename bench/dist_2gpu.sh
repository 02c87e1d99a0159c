#!/usr/bin/env bash
# One process per GPU (issue #14) on a machine with 2 GPUs: `kat train` as two processes under
# torchrun against the one-process `kat train --device cuda:0,1`, the same run otherwise.
#  1. tests: kat_gpu_tests --gtest_filter='GpuJob.*' (two ranks in threads vs the one-process group).
#  2. losses: the same seed, data and global batch; metrics.jsonl step by step and the evaluations.
#     Expected BITWISE equal: rank r loads exactly the rows replica r of the one-process group gets
#     (data::make_batch_rows, tested on the CPU), draws the same drop-path masks, runs the same
#     kernels on the same GPU, and with 2 ranks every gradient element and the loss are summed as a
#     single addition a + b, which is commutative in IEEE arithmetic. The evaluation's counts are
#     exact; its loss sum is added up in another order (two partial sums), so test_loss is held to
#     1e-9 relative (double rounding of ~2000 float terms in another order: ~1e-13).
#  3. throughput: kat bench train (kat_tiny_patch16_224, global batch 256, host input) on 1 GPU at
#     batch 128, one process on cuda:0,1, and 2 processes under torchrun.
#  4. faults: the same run started as 2 processes by hand (torchrun would kill the survivor itself,
#     hiding what kat does), rank 1 killed (SIGKILL) once the step-40 checkpoint exists: rank 0 must
#     exit by itself, with a message naming the problem, within --dist-timeout (30 s) plus start-up
#     slack; then torchrun resumes the run directory and finishes; its steps after the checkpoint
#     must equal the straight 2-process run's bitwise (resume is bit-exact).
# NOT YET RUN on a multi-GPU machine (written without one): read the log before trusting a verdict.
#
# usage, on the GPU machine from the repository root, with kat and kat_gpu_tests carried:
#   bench/stage_gpu_carry.sh kat kat_gpu_tests      (here)
#   source .carry/gpurun/run_env.sh && bash bench/dist_2gpu.sh
# env: OUT (default out/dist_2gpu), DATA (default fashion-mnist; any kat --data spec), PYTHON
#      (default python3, must import torch for torchrun). Output: $OUT/summary.txt and the logs.
set -uo pipefail
OUT=${OUT:-out/dist_2gpu}
DATA=${DATA:-fashion-mnist}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
KAT=$(command -v kat) || { echo "kat is not on PATH: source .carry/gpurun/run_env.sh first" >&2; exit 2; }
export NCCL_NVLS_ENABLE=0  # no NVLink multicast (the device machines' rule)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
since() { awk -v t0="$1" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }'; }
TORCHRUN=("$PY" -m torch.distributed.run --standalone --nproc-per-node 2 --no-python "$KAT")
RUN_ARGS=(train --data "$DATA" --train-subset 15360 --test-subset 2000 --batch 256 --epochs 6 --seed 1
          --log-every 1 --save-every 20 --no-progress --decode cpu)

# 1. tests
if command -v kat_gpu_tests > /dev/null; then
  timeout 300 kat_gpu_tests --gtest_filter='GpuJob.*' > "$OUT/tests.log" 2>&1
  say "tests GpuJob.*: exit $? ($(grep -cE '^\[       OK' "$OUT/tests.log") ok, $(grep -c FAILED "$OUT/tests.log") failed lines)"
else
  say "kat_gpu_tests not carried: tests skipped"
fi

# 2. one process on 2 GPUs vs 2 processes
rm -rf "$OUT/one" "$OUT/job" "$OUT/kill"
t0=$(date +%s.%N)
timeout 600 "$KAT" "${RUN_ARGS[@]}" --device cuda:0,1 --out "$OUT/one" > "$OUT/one.log" 2>&1
say "one process, --device cuda:0,1: exit $? ($(since "$t0") s)"
t0=$(date +%s.%N)
timeout 600 "${TORCHRUN[@]}" "${RUN_ARGS[@]}" --device cuda --out "$OUT/job" > "$OUT/job.log" 2>&1
say "torchrun 2 processes, --device cuda: exit $? ($(since "$t0") s)"

compare() {  # compare A B FIRST_STEP: metrics.jsonl of run A against run B from step FIRST_STEP on
  "$PY" - "$1" "$2" "$3" << 'EOF' | tee -a "$SUMMARY"
import json, sys
a, b, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
def lines(d):
    steps, evals = {}, {}
    for l in open(d + "/metrics.jsonl"):
        j = json.loads(l)
        (evals if "test_top1" in j else steps)[j["step"]] = j
    return steps, evals
sa, ea = lines(a)
sb, eb = lines(b)
common = sorted(s for s in sa if s in sb and s >= first)
diff = [abs(sa[s]["loss"] - sb[s]["loss"]) for s in common]
same = sum(d == 0 for d in diff)
print(f"  {a} vs {b}: {len(common)} common steps from {first}, {same} bitwise equal, max |loss diff| "
      f"{max(diff) if diff else float('nan'):.3g}")
ok = bool(common) and same == len(common)
for s in sorted(s for s in ea if s in eb and s >= first):
    x, y = ea[s], eb[s]
    rel = abs(x["test_loss"] - y["test_loss"]) / max(abs(y["test_loss"]), 1e-30)
    good = x["test_top1"] == y["test_top1"] and x["test_top5"] == y["test_top5"] and rel <= 1e-9
    ok &= good
    print(f"  eval at step {s}: top-1 {x['test_top1']:.2f} / {y['test_top1']:.2f}, test loss rel diff {rel:.2g}"
          f"{'' if good else '  <-- MISMATCH'}")
ra = [sa[s]["img_per_s"] for s in sorted(sa)][-20:]
rb = [sb[s]["img_per_s"] for s in sorted(sb)][-20:]
if ra and rb:
    print(f"  img/s (epoch so far, last logged): {ra[-1]:.0f} vs {rb[-1]:.0f}")
print("  verdict:", "PASS" if ok else "FAIL")
EOF
}
say "losses (expected bitwise, see the header):"
compare "$OUT/job" "$OUT/one" 0

# 3. throughput
say "throughput, kat bench train kat_tiny_patch16_224, host input:"
B=(bench train -m kat_tiny_patch16_224 --iters 30 --input host)
say "  1 GPU, batch 128:        $(timeout 300 "$KAT" "${B[@]}" -b 128 --device cuda:0 2>> "$OUT/bench.err" | tail -1)"
say "  1 process, cuda:0,1:     $(timeout 300 "$KAT" "${B[@]}" -b 256 --device cuda:0,1 2>> "$OUT/bench.err" | tail -1)"
say "  torchrun 2 processes:    $(timeout 300 "${TORCHRUN[@]}" "${B[@]}" -b 256 --device cuda 2>> "$OUT/bench.err" | grep 'img/s' | tail -1)"

# 4. a killed rank, then resume
port=$((29600 + RANDOM % 300))
pids=()
for r in 0 1; do
  MASTER_ADDR=127.0.0.1 MASTER_PORT=$port RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r LOCAL_WORLD_SIZE=2 \
    "$KAT" "${RUN_ARGS[@]}" --device cuda --dist-timeout 30 --out "$OUT/kill" > "$OUT/kill_rank$r.log" 2>&1 &
  pids+=($!)  # kat itself (no wrapper: the kill must reach it)
done
for _ in $(seq 1 1200); do  # up to 120 s for the step-40 checkpoint
  [ -e "$OUT/kill/ckpt-step00000040.safetensors" ] && break
  sleep 0.1
done
if [ -e "$OUT/kill/ckpt-step00000040.safetensors" ]; then
  kill -9 "${pids[1]}"
  t_kill=$(date +%s.%N)
  for _ in $(seq 1 900); do  # rank 0 gets 90 s before it is called hung
    kill -0 "${pids[0]}" 2> /dev/null || break
    sleep 0.1
  done
  waited=$(since "$t_kill")
  if kill -0 "${pids[0]}" 2> /dev/null; then
    kill -9 "${pids[0]}"
    say "killed rank 1: rank 0 was still running after $waited s: FAIL (it hangs)"
  fi
  wait "${pids[0]}"
  rc0=$?
  wait "${pids[1]}" 2> /dev/null
  say "killed rank 1 after the step-40 checkpoint: rank 0 exited with $rc0 after $waited s (limit 30 s + slack):"
  say "  $(grep -E 'rank 0 of 2: ' "$OUT/kill_rank0.log" | tail -1)"
  ok=$(awk -v w="$waited" -v rc="$rc0" 'BEGIN { print (w < 45 && rc != 0 && rc != 137) ? 1 : 0 }')
  say "  verdict: $([ "$ok" = 1 ] && echo PASS || echo FAIL)"
  timeout 600 "${TORCHRUN[@]}" train --resume "$OUT/kill" --device cuda --no-progress > "$OUT/resume.log" 2>&1
  say "resume under torchrun: exit $? ($(grep -m1 -o 'resuming.*from step [0-9]*' "$OUT/resume.log"))"
  say "resumed run vs the straight 2-process run (bitwise expected after the checkpoint):"
  compare "$OUT/kill" "$OUT/job" 41
else
  say "killed-rank test: no step-40 checkpoint within 120 s (see $OUT/kill_rank*.log)"
  kill "${pids[0]}" "${pids[1]}" 2> /dev/null
fi
echo "summary: $SUMMARY"
