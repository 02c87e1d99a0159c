#!/usr/bin/env bash
# session 9, device call B (~8 min): #13 serving latency (kat eager / CUDA graph vs timm eager /
# compile / reduce-overhead at b1/8/32) and the attention model rows (ours vs cuDNN). <= 8 files.
set -u
source .carry/gpurun/run_env.sh
T0=$(date +%s)
st() { echo "$1 at $(( $(date +%s) - T0 ))s" >> $OUT/steps.txt; }
OUT=$OUT/latency timeout -k 10 330 bash bench/infer_latency.sh > $OUT/latency_stdout.log 2>&1; st "latency rc $?"
left=$(( 570 - ($(date +%s) - T0) ))
[ $left -gt 60 ] && { SKIP_TESTS=1 ROUNDS=2 BUDGET=$(( left - 50 )) OUT=$OUT/att timeout -k 10 $(( left - 10 )) bash bench/attention_ab.sh > $OUT/att_stdout.log 2>&1; st "att rc $?"; }
cd $OUT; cp latency/table.md latency.md 2>/dev/null; cp att/table.md att.md 2>/dev/null
tar czf raw.tgz latency att && rm -rf latency att
