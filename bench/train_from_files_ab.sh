#!/usr/bin/env bash
# `kat train --decode gpu` from a folder of JPEGs in several variants, one after the other, beside
# `kat bench train --input host` before and after (issue #11: where the time goes when training from
# files). Each row: img/s (steps 10 to the last, bench/train_rate.py), the share of the host-input
# figure, and the run's `data:` line (waiting for data, nvJPEG calls, augmentation, readers, GPU
# time per batch of decode and augmentation, staging) and its decode line.
#
#   after bench/stage_gpu_carry.sh kat kat_gpu_tests data_bench, on the GPU machine:
#   source .carry/gpurun/run_env.sh && OUT=$OUT bash bench/train_from_files_ab.sh
# env: DATA (default /tmp/kat_jpegs, made by bench/make_jpegs.py with N train images when missing),
#      N (13000), STEPS (50), MODEL (kat_tiny_patch16_224), BATCH (256), RUN_TIMEOUT (seconds per
#      run, 90), DATA_TIMEOUT (the loader's stall limit, --data-timeout, 20), TESTS=1 (the nvJPEG decoder's GPU tests first), OUT (default out/train_from_files),
#      VARIANTS: lines "name|environment|kat train arguments", default below (the A/B of
#      bench/records/2026-12-07-s8-h100/README.md: the hardware decoder's preallocated pool (the
#      default since session 9) against none, nvJPEG's allocators vs kept memory, the hardware
#      decoder's planar output converted by our kernel (KAT_NVJPEG_OUTPUT=yuv|nv12), more decode
#      threads, high-priority streams; and a CPU decode share with the loader's threads niced: while
#      training, nvJPEG delivered only ~12k img/s and the 15 reader threads sat mostly idle, so
#      libjpeg-turbo taking 20-30 % of the files may now add instead of compete).
# Output: $OUT/table.md (also on stdout) and $OUT/logs.tgz (every log: one file to bring back).
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-/tmp/kat_jpegs}
N=${N:-13000}
STEPS=${STEPS:-50}
MODEL=${MODEL:-kat_tiny_patch16_224}
BATCH=${BATCH:-256}
RUN_TIMEOUT=${RUN_TIMEOUT:-90}
# The loader's stall limit: well under RUN_TIMEOUT, so a run that stops making progress says which
# stage it waits for (session 9: several runs made no step within 50-70 s and said nothing).
DATA_TIMEOUT=${DATA_TIMEOUT:-20}
OUT=${OUT:-out/train_from_files}
VARIANTS=${VARIANTS:-"default||--decode gpu
no_preallocation|KAT_NVJPEG_PREALLOCATE=0|--decode gpu
kept|KAT_NVJPEG_ALLOCATOR=kept|--decode gpu
yuv|KAT_NVJPEG_OUTPUT=yuv|--decode gpu
nv12|KAT_NVJPEG_OUTPUT=nv12|--decode gpu
yuv_kept|KAT_NVJPEG_OUTPUT=yuv KAT_NVJPEG_ALLOCATOR=kept|--decode gpu
kept_8_threads|KAT_NVJPEG_ALLOCATOR=kept|--decode gpu --decode-streams 8
kept_high_priority|KAT_NVJPEG_ALLOCATOR=kept|--decode gpu --decode-priority high
cpu_share_0.2_nice||--decode gpu --decode-cpu-share 0.2 --loader-nice 10"}
command -v kat > /dev/null || { echo "kat is not on PATH: source .carry/gpurun/run_env.sh first" >&2; exit 2; }
L=$OUT/logs
mkdir -p "$L"
DEIT="--crop rrc --hflip --randaug-n 2 --randaug-m 9 --reprob 0.25 --mixup 0.8 --cutmix 1.0"
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; nproc; } > "$L/machine.txt" 2>&1

if [ "${TESTS:-1}" = 1 ] && command -v kat_gpu_tests > /dev/null; then
  timeout 120 kat_gpu_tests --gtest_filter='GpuDataDir.Nvjpeg*:GpuDataDir.KeptMemory*:GpuDataDir.Truncated*:GpuDataDir.Ycbcr*:GpuDataDir.Yuv*' \
    > "$L/gpu_tests.log" 2>&1
  echo "decoder tests: exit $? ($(grep -cE '^\[       OK \]' "$L/gpu_tests.log") OK, $(grep -cE '^\[  FAILED  \] [A-Z]' "$L/gpu_tests.log") failed)" \
    | tee "$L/tests.txt"
fi
[ -d "$DATA/train" ] || python3 bench/make_jpegs.py "$DATA" --train "$N" --val 256 > "$L/make_jpegs.log" 2>&1

host() {
  timeout -k 10 60 kat bench train -m "$MODEL" -b "$BATCH" --device cuda --input host --iters 20 --csv 2>&1 \
    | tee -a "$L/host.log" | awk -F, '/^train,/ {print $(NF-2)}'
}
HOST=$(host)
ROWS=""
while IFS='|' read -r name envs args; do
  [ -n "$name" ] || continue
  rm -rf "/tmp/kat_ab_run_$name"
  # shellcheck disable=SC2086  # envs and args are word lists
  t0=$(date +%s.%N)
  # Past RUN_TIMEOUT: SIGUSR1 first (kat writes where the run stands: step and phase), KILL 10 s later.
  env $envs timeout -s USR1 -k 10 "$RUN_TIMEOUT" kat train -m "$MODEL" --data "folder:$DATA" --device cuda --batch "$BATCH" \
    --epochs 1 --warmup-epochs 0 $DEIT --max-steps "$STEPS" --log-every 10 --no-progress \
    --data-timeout "$DATA_TIMEOUT" --out "/tmp/kat_ab_run_$name" --set num_classes=10 $args > "$L/train_$name.log" 2>&1
  rc=$?
  echo "bench: exit $rc after $(python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$t0") s" >> "$L/train_$name.log"
  rate=$(python3 bench/train_rate.py "/tmp/kat_ab_run_$name/metrics.jsonl" --batch "$BATCH" --from-step 10 2>> "$L/train_$name.log")
  share=$(python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$rate" "$HOST" 2> /dev/null || echo -)
  detail=$(grep -hE '^data:|nvJPEG asked|^kat: GPU loader|^kat: SIGUSR1|^bench: exit' "$L/train_$name.log" | tr '\n' ' ' | sed 's/|/\//g')
  ROWS+="| $name | ${envs:-} | $args | ${rate:-FAILED (exit $rc)} | $share | $detail |"$'\n'
  echo "$name: ${rate:-FAILED (exit $rc)} img/s" >&2
done <<< "$VARIANTS"
HOST2=$(host)
{
  echo "kat train from $DATA on $(head -1 "$L/machine.txt"), $MODEL, batch $BATCH, full DeiT recipe, steps 10-$STEPS"
  echo "kat bench train --input host: $HOST before, $HOST2 after"
  echo
  echo "| variant | environment | arguments | img/s | of host input | where the time went |"
  echo "|---|---|---|---:|---:|---|"
  printf '%s' "$ROWS"
} | tee "$OUT/table.md"
(cd "$OUT" && tar czf logs.tgz logs && rm -rf logs)
