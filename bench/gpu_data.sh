#!/usr/bin/env bash
# Issue #11's benchmark, in one run on the GPU machine: training from a folder of JPEGs against the
# same model fed from host memory, and the data pipeline alone against torchvision's GPU path, on
# the same files. Prints a Markdown table (also $OUT/gpu_data.md) and keeps every log in $OUT.
#
#   after bench/stage_gpu_carry.sh kat kat_gpu_tests data_bench, on the GPU machine:
#   source .carry/gpurun/run_env.sh && bash bench/gpu_data.sh
# env: DATA (default /tmp/kat_jpegs; written by bench/make_jpegs.py when missing), N (train images,
#      20480), STEPS (training steps timed after 20 warm-up steps, 40), BATCHES (pipeline batches, 60),
#      MODEL (kat_tiny_patch16_224), BATCH (256), OUT (default ./out/gpu_data).
#      SHARES / STREAMS_LIST (the --cpu-share x --decode-streams sweep; kat train reruns with its best),
#      QUICK=1 (skip the torchvision, and CPU-loader training rows).
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-/tmp/kat_jpegs}
N=${N:-20480}
STEPS=${STEPS:-40}
BATCHES=${BATCHES:-60}
MODEL=${MODEL:-kat_tiny_patch16_224}
BATCH=${BATCH:-256}
OUT=${OUT:-out/gpu_data}
mkdir -p "$OUT"
THREADS=$(( $(nproc) - 1 ))
DEIT="--crop rrc --hflip --randaug-n 2 --randaug-m 9 --reprob 0.25 --mixup 0.8 --cutmix 1.0"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; } > "$OUT/machine.txt" 2>&1

[ -d "$DATA/train" ] || python3 bench/make_jpegs.py "$DATA" --train "$N" --val 1024 2>&1 | tee "$OUT/make_jpegs.log"
du -sh "$DATA" >> "$OUT/machine.txt"

# img/s of `kat train` between the metrics lines of step 20 and the last step (warm-up excluded).
train_rate() { python3 bench/train_rate.py "$1" --batch "$BATCH" --from-step 20; }

run_train() {  # name, extra args
  local name=$1; shift
  rm -rf "$OUT/run_$name"
  kat train -m "$MODEL" --data "folder:$DATA" --device cuda --batch "$BATCH" --epochs 1 --warmup-epochs 0 \
    $DEIT --max-steps $((20 + STEPS)) --log-every 20 --no-progress --out "$OUT/run_$name" --set num_classes=10 "$@" \
    > "$OUT/train_$name.log" 2>&1 || { echo "FAILED (see train_$name.log)"; return; }
  train_rate "$OUT/run_$name/metrics.jsonl"
  rm -f "$OUT/run_$name"/*.safetensors  # ~70 MB each for kat_tiny: keep $OUT small enough to bring back
}

echo "== pipeline alone" >&2
P_GPU_DEIT=$(data_bench "$DATA" --decode gpu --recipe deit --batch "$BATCH" --batches "$BATCHES" --csv 2> "$OUT/data_gpu_deit.err" | tee "$OUT/data_gpu_deit.log" | awk -F, '/^data_bench/ {print $5}')
P_GPU_LIGHT=$(data_bench "$DATA" --decode gpu --recipe light --batch "$BATCH" --batches "$BATCHES" --csv 2> "$OUT/data_gpu_light.err" | tee "$OUT/data_gpu_light.log" | awk -F, '/^data_bench/ {print $5}')
P_CPU_DEIT=$(data_bench "$DATA" --decode cpu --recipe deit --batch "$BATCH" --batches 20 --csv 2> "$OUT/data_cpu_deit.err" | tee "$OUT/data_cpu_deit.log" | awk -F, '/^data_bench/ {print $5}')
# The decode split and overlap sweep: --cpu-share (GpuLoaderOptions::cpu_decode_share) x
# --decode-streams (GpuLoaderOptions::decode_streams), DeiT recipe; stderr logs say where the time went.
SWEEP_ROWS=""
BEST=0; BEST_SHARE=0; BEST_STREAMS=1
for STREAMS in ${STREAMS_LIST:-1 3}; do
  for SHARE in ${SHARES:-0 0.15 0.3}; do
    R=$(data_bench "$DATA" --decode gpu --recipe deit --batch "$BATCH" --batches "$BATCHES" --cpu-share "$SHARE" \
          --decode-streams "$STREAMS" --csv 2> "$OUT/sweep_s${SHARE}_d${STREAMS}.err" \
        | tee "$OUT/sweep_s${SHARE}_d${STREAMS}.log" | awk -F, '/^data_bench/ {print $5}')
    SWEEP_ROWS+="| kat data pipeline, GPU, DeiT, --cpu-share $SHARE --decode-streams $STREAMS | ${R:-FAILED} | |"$'\n'
    if [ -n "$R" ] && python3 -c "import sys; sys.exit(0 if float('$R') > float('$BEST') else 1)"; then
      BEST=$R; BEST_SHARE=$SHARE; BEST_STREAMS=$STREAMS
    fi
  done
done
if [ "${QUICK:-0}" = 1 ]; then T_LIGHT=""; T_DEIT=""; else
T_LIGHT=$(python3 bench/torch_gpu_data.py "$DATA" --recipe light --batch "$BATCH" --batches "$BATCHES" --threads "$THREADS" --csv 2>&1 | tee "$OUT/torch_light.log" | awk -F, '/^torch_gpu_data/ {print $4}')
T_DEIT=$(python3 bench/torch_gpu_data.py "$DATA" --recipe deit --batch "$BATCH" --batches 20 --threads "$THREADS" --csv 2>&1 | tee "$OUT/torch_deit.log" | awk -F, '/^torch_gpu_data/ {print $4}')
fi

echo "== training" >&2
HOST=$(kat bench train -m "$MODEL" -b "$BATCH" --device cuda --input host --iters 20 --csv 2>&1 | tee "$OUT/bench_host.log" | awk -F, '/^train,/ {print $(NF-2)}')
TR_GPU=$(run_train gpu --decode gpu)
# The best setting of the sweep (kat train --decode-cpu-share / --decode-streams).
TR_BEST=$(run_train gpu_best --decode gpu --decode-cpu-share "$BEST_SHARE" --decode-streams "$BEST_STREAMS")
TR_CPU=""; [ "${QUICK:-0}" = 1 ] || TR_CPU=$(run_train cpu --decode cpu --lazy-data)
HOST2=$(kat bench train -m "$MODEL" -b "$BATCH" --device cuda --input host --iters 20 --csv 2>&1 | tee "$OUT/bench_host2.log" | awk -F, '/^train,/ {print $(NF-2)}')

ratio() { python3 -c "import sys; a, b = sys.argv[1], sys.argv[2]; print(f'{float(a) / float(b):.2f}' if a and b else '-')" "$1" "$2" 2>/dev/null || echo -; }
{
  echo "GPU data pipeline (issue #11) on $(head -1 "$OUT/machine.txt"), $(nproc) cores; $N JPEGs in $DATA; $MODEL, batch $BATCH"
  echo
  echo "| what | img/s | ratio |"
  echo "|---|---:|---|"
  echo "| kat data pipeline, GPU (nvJPEG + GPU aug), DeiT recipe | $P_GPU_DEIT | |"
  echo "| kat data pipeline, GPU, light (decode + RRC + flip + normalise) | $P_GPU_LIGHT | $(ratio "$P_GPU_LIGHT" "$T_LIGHT") x torchvision light (target >= 2) |"
  printf '%s' "$SWEEP_ROWS"
  echo "| kat data pipeline, CPU loader ($THREADS threads), DeiT recipe | $P_CPU_DEIT | |"
  echo "| torchvision decode_jpeg(cuda) + v2 GPU, light | $T_LIGHT | |"
  echo "| torchvision decode_jpeg(cuda) + v2 GPU, DeiT (RandAugment, erasing, mixup/cutmix) | $T_DEIT | $(ratio "$P_GPU_DEIT" "$T_DEIT") = kat / torchvision |"
  echo "| kat bench train --input host (before / after) | $HOST / $HOST2 | |"
  echo "| kat train --decode gpu, DeiT recipe | $TR_GPU | $(ratio "$TR_GPU" "$HOST") of host-input bench (target >= 0.90) |"
  echo "| kat train --decode gpu --decode-cpu-share $BEST_SHARE --decode-streams $BEST_STREAMS (best of the sweep) | $TR_BEST | $(ratio "$TR_BEST" "$HOST") of host-input bench (target >= 0.90) |"
  echo "| kat train --decode cpu --lazy-data, DeiT recipe | $TR_CPU | $(ratio "$TR_CPU" "$HOST") of host-input bench |"
  echo
  grep -h "decode:" "$OUT"/train_gpu.log "$OUT"/train_gpu_best.log "$OUT"/data_gpu_deit.err 2>/dev/null | sed 's/^/    /'
  grep -h "^per batch\|^decoded:" "$OUT"/sweep_*.err 2>/dev/null | sed 's/^/    /'
} | tee "$OUT/gpu_data.md"
