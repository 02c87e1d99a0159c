#!/usr/bin/env bash
# FP8's accuracy guard on the GPU (issue #13 item 3): the README's default run (kat_micro_patch4_28,
# Fashion-MNIST, 6 epochs) in bf16 (--precision auto) and fp8 for each seed, interleaved, one CSV
# row per run (final test top-1 and loss from metrics.jsonl, wall seconds, exit status).
#   bench/fp8_guard.sh CSV DATA_DIR RUNS_DIR [SEEDS="0 1 2"] [RUN_TIMEOUT=60]
# (kat on PATH: source .carry/gpurun*/run_env.sh). The runs stay in RUNS_DIR/{auto,fp8}-sS.
set -u
CSV=$1 DATA=$2 RUNS=$3 SEEDS=${4:-"0 1 2"} RUN_TIMEOUT=${5:-60}
mkdir -p "$RUNS"
echo "seed,precision,test_top1,test_loss,seconds,rc" > "$CSV"
for s in $SEEDS; do
  for p in auto fp8; do
    t=$(date +%s)
    timeout -k 5 "$RUN_TIMEOUT" kat train --device cuda --data "fashion-mnist:$DATA" --precision $p --seed "$s" \
      --no-progress --out "$RUNS/$p-s$s" > "$RUNS/$p-s$s.log" 2>&1
    rc=$?
    acc=$(grep test_top1 "$RUNS/$p-s$s/metrics.jsonl" 2>/dev/null | tail -1 | python3 -c \
      "import json,sys; d=json.loads(sys.stdin.read() or '{}'); print(d.get('test_top1','-'), d.get('test_loss','-'), sep=',')")
    echo "$s,$p,$acc,$(( $(date +%s) - t )),$rc" | tee -a "$CSV"
  done
done
