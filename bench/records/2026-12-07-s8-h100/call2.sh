#!/usr/bin/env bash
# session 8, device call 2: #11 more decode threads inside kat train (the nvJPEG call is ~63 ms of latency per batch while training), then #12 py_gpu
set -u
source .carry/gpurun/run_env.sh
T0=$(date +%s)
R=$OUT/r; mkdir -p $R
st() { echo "$1 at $(( $(date +%s) - T0 ))s" >> $OUT/steps.txt; }
D=/tmp/kat_jpegs
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/machine.txt; nproc >> $R/machine.txt
python3 bench/make_jpegs.py $D --train 20480 --val 1024 > $R/make_jpegs.log 2>&1; st jpegs
DEIT="--crop rrc --hflip --randaug-n 2 --randaug-m 9 --reprob 0.25 --mixup 0.8 --cutmix 1.0"
host() { timeout 60 kat bench train -m kat_tiny_patch16_224 -b 256 --device cuda --input host --iters 30 --csv 2>&1 | awk -F, '/^train,/ {print $(NF-2)}'; }
rate() { python3 - "$1" <<'PY'
import json, sys
L = [json.loads(l) for l in open(sys.argv[1]) if '"img_per_s"' in l]
a, z = L[1], L[-1]
ea, ez = a["step"] * 256 / a["img_per_s"], z["step"] * 256 / z["img_per_s"]
print(f"{(z['step'] - a['step']) * 256 / (ez - ea):.0f}")
PY
}
train() { name=$1; shift
  timeout 90 kat train -m kat_tiny_patch16_224 --data folder:$D --device cuda --batch 256 --epochs 1 --warmup-epochs 0 $DEIT \
    --max-steps 70 --log-every 10 --no-progress --out /tmp/run_$name --set num_classes=10 "$@" > $R/train_$name.log 2>&1
  echo "$name rc $? $(rate /tmp/run_$name/metrics.jsonl) | $(grep '^data:' $R/train_$name.log)" >> $OUT/train.txt; st "$name"; }
echo "host_before $(host)" >> $OUT/train.txt
train d3 --decode gpu --decode-streams 3
train d8 --decode gpu --decode-streams 8
train d3_high --decode gpu --decode-streams 3 --decode-priority high --data-timeout 20
train d5 --decode gpu --decode-streams 5
echo "host_after $(host)" >> $OUT/train.txt
timeout 60 data_bench $D --decode gpu --recipe deit --batches 80 --decode-streams 6 --csv > $R/pipeline_d6.csv 2> $R/pipeline_d6.err; st pipeline
for r in 1; do for att in ours cudnn; do for m in "train -b 256" "infer -b 1024"; do
  echo "$att $m $(KAT_ATTENTION=$att timeout 60 kat bench $m -m kat_tiny_patch16_224 --iters 20 --device cuda --csv 2>>$R/att.err | tail -1)" >> $OUT/att.txt
done; done; done; st att
left=$(( 265 - ($(date +%s) - T0) ))
if [ $left -gt 250 ]; then st "py_gpu with ${left}s"
OUT=$R BATCHES=256 PYTEST_TIMEOUT=120 BENCH_TIMEOUT=$(( left - 170 )) timeout $(( left - 5 )) bash bench/py_gpu.sh > $R/py_gpu.log 2>&1
st "py_gpu rc $?"; fi
cd $OUT && tar czf r.tgz r && rm -rf r
cat $OUT/steps.txt $OUT/train.txt $OUT/att.txt
