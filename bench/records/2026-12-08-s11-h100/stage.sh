#!/usr/bin/env bash
# Everything the session-11 device calls carry, made on the dev VM in one go (~10 min the first
# time: the CUDA build and ~530 MB of SDK wheels; minutes after):
#   .carry/gpurun       kat kat_gpu_tests data_bench op_bench fp8_bench + libraries (39 MiB)
#   .carry/gpurun_min   kat kat_gpu_tests, every library gzipped (28 MiB: fits beside fm_full)
#   .carry/gpurun_fp8   kat fp8_bench + libraries (25 MiB)
#   .carry/fm_small     Fashion-MNIST's t10k files, also as train-* (8.5 MiB; the GPU tests)
#   .carry/fm_full      Fashion-MNIST (30 MiB; the FP8 accuracy guard)
# The calls: call_min.sh (SUITE=1: the most in one 590 s call), call1.sh, call2.sh, call3.sh.
set -euo pipefail
cd "$(dirname "$0")/../../.."
eval "$(bench/fetch_gpu_sdks.sh)"
bash bench/stage_gpu_carry.sh kat kat_gpu_tests data_bench op_bench fp8_bench
C=.carry
rm -rf $C/gpurun_min $C/gpurun_fp8
mkdir -p $C/gpurun_min/lib $C/gpurun_fp8 $C/fm_small $C/fm_full
cp -a $C/gpurun/{kat.gz,kat_gpu_tests.gz,run_env.sh} $C/gpurun_min/
for f in $C/gpurun/lib/*; do
  case $f in *.gz) cp "$f" $C/gpurun_min/lib/ ;; *) gzip -9 -c "$f" > "$C/gpurun_min/lib/$(basename "$f").gz" ;; esac
done
cp -a $C/gpurun/{kat.gz,fp8_bench.gz,lib,run_env.sh} $C/gpurun_fp8/
FM=${FM:-/usr/share/datasets/fashion-mnist}
cp "$FM"/*.gz $C/fm_full/
for k in images-idx3-ubyte labels-idx1-ubyte; do
  cp "$FM/t10k-$k.gz" $C/fm_small/ && cp "$FM/t10k-$k.gz" "$C/fm_small/train-$k.gz"
done
du -sh $C/*
