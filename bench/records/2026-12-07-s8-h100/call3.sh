#!/usr/bin/env bash
# session 8, device call 3 (short: ~200 s): #11 nvJPEG memory kept (A/B against nvJPEG's cudaMalloc/cudaFree), 8 decode threads, high priority; #13 cuDNN attention in the model
set -u
source .carry/gpurun/run_env.sh
T0=$(date +%s)
R=$OUT/r; mkdir -p $R
st() { echo "$1 at $(( $(date +%s) - T0 ))s" >> $OUT/steps.txt; }
D=/tmp/kat_jpegs
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/steps.txt
timeout 60 kat_gpu_tests --gtest_filter='GpuDataDir.Nvjpeg*:GpuDataDir.KeptMemory*:GpuDataDir.LoaderDeterministic*:GpuDataDir.BadFile*:GpuDataDir.Truncated*' > $R/gpu_tests.log 2>&1; st "tests rc $?"
grep -E "FAILED|PASSED" $R/gpu_tests.log >> $OUT/steps.txt
python3 bench/make_jpegs.py $D --train 13000 --val 256 > $R/make_jpegs.log 2>&1; st jpegs
DEIT="--crop rrc --hflip --randaug-n 2 --randaug-m 9 --reprob 0.25 --mixup 0.8 --cutmix 1.0"
host() { timeout 40 kat bench train -m kat_tiny_patch16_224 -b 256 --device cuda --input host --iters 20 --csv 2>&1 | awk -F, '/^train,/ {print $(NF-2)}'; }
rate() { python3 - "$1" <<'PY'
import json, sys
L = [json.loads(l) for l in open(sys.argv[1]) if '"img_per_s"' in l]
a, z = L[1], L[-1]
ea, ez = a["step"] * 256 / a["img_per_s"], z["step"] * 256 / z["img_per_s"]
print(f"{(z['step'] - a['step']) * 256 / (ez - ea):.0f}")
PY
}
train() { name=$1; shift
  timeout 45 kat train -m kat_tiny_patch16_224 --data folder:$D --device cuda --batch 256 --epochs 1 --warmup-epochs 0 $DEIT \
    --max-steps 50 --log-every 10 --no-progress --out /tmp/run_$name --set num_classes=10 "$@" > $R/train_$name.log 2>&1
  echo "$name rc $? $(rate /tmp/run_$name/metrics.jsonl) | $(grep -h 'nvJPEG asked\|^data:' $R/train_$name.log | tr '\n' ' ')" >> $OUT/train.txt; st "$name"; }
echo "host_before $(host)" >> $OUT/train.txt
train d3_cudamalloc --decode gpu
export KAT_NVJPEG_ALLOCATOR=kept; train d3_kept --decode gpu; unset KAT_NVJPEG_ALLOCATOR
export KAT_NVJPEG_ALLOCATOR=kept; train d3_kept_high --decode gpu --decode-priority high --data-timeout 15; unset KAT_NVJPEG_ALLOCATOR
echo "host_after $(host)" >> $OUT/train.txt
cd $OUT && tar czf r.tgz r && rm -rf r
cat $OUT/steps.txt $OUT/train.txt
