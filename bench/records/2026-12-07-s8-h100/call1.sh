#!/usr/bin/env bash
# session 8, device call 1: #11 where kat train's time goes (data: lines; loader niceness, fewer readers), then #13 attention A/B
set -u
source .carry/gpurun/run_env.sh
T0=$(date +%s)
st() { echo "$1 at $(( $(date +%s) - T0 ))s" >> $OUT/steps.txt; }
D=/tmp/kat_jpegs
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/machine.txt; nproc >> $OUT/machine.txt
timeout 120 kat_gpu_tests --gtest_filter='GpuData*:GpuAugment*' > $OUT/gpu_tests.log 2>&1; st "tests rc $?"
tail -3 $OUT/gpu_tests.log >> $OUT/steps.txt; grep -E "FAILED|OK \]" $OUT/gpu_tests.log >> $OUT/steps.txt
python3 bench/make_jpegs.py $D --train 20480 --val 1024 > $OUT/make_jpegs.log 2>&1; st jpegs
DEIT="--crop rrc --hflip --randaug-n 2 --randaug-m 9 --reprob 0.25 --mixup 0.8 --cutmix 1.0"
timeout 60 kat bench train -m kat_tiny_patch16_224 -b 256 --device cuda --input host --iters 30 --phases --csv > $OUT/host_before.log 2>&1; st host
rate() { python3 - "$1" <<'PY'
import json, sys
L = [json.loads(l) for l in open(sys.argv[1]) if '"img_per_s"' in l]
a, z = L[1], L[-1]
ea, ez = a["step"] * 256 / a["img_per_s"], z["step"] * 256 / z["img_per_s"]
print(f"{(z['step'] - a['step']) * 256 / (ez - ea):.0f}")
PY
}
train() { name=$1; shift
  timeout 120 kat train -m kat_tiny_patch16_224 --data folder:$D --device cuda --batch 256 --epochs 1 --warmup-epochs 0 $DEIT \
    --max-steps 70 --log-every 10 --no-progress --out /tmp/run_$name --set num_classes=10 "$@" > $OUT/train_$name.log 2>&1
  echo "$name rc $? $(rate /tmp/run_$name/metrics.jsonl) | $(grep '^data:' $OUT/train_$name.log)" >> $OUT/train.txt; st "$name"; }
train gpu3 --decode gpu
train gpu3_nice10 --decode gpu --loader-nice 10
train gpu3_w4 --decode gpu --workers 4
train gpu2_w4_nice10 --decode gpu --workers 4 --decode-streams 2 --loader-nice 10
timeout 60 data_bench $D --decode gpu --recipe deit --batches 80 --csv > $OUT/pipeline.csv 2> $OUT/pipeline.err; st pipeline
timeout 60 kat bench train -m kat_tiny_patch16_224 -b 256 --device cuda --input host --iters 30 --csv > $OUT/host_after.log 2>&1; st host2
left=$(( 585 - ($(date +%s) - T0) ))
if [ $left -gt 200 ]; then
  OUT=$OUT/att ROUNDS=2 timeout $(( left - 5 )) bash bench/attention_ab.sh > $OUT/attention_ab.log 2>&1; st "attention rc $?"
fi
