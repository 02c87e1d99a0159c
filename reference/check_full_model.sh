#!/usr/bin/env bash
# Full-size check of `kat infer` against the PyTorch reference (float64) on random weights:
#   reference/check_full_model.sh [MODEL] [BATCH]      (default kat_tiny_patch16_224, 2)
# Needs /usr/bin/python3 with torch (Debian python3-torch) and a built build/kat.
# Pass criterion (issue #2): logits and features within 1e-5 norm-wise relative error.
# env: KAT_BIN (default build/kat); DEVICE=cuda runs `kat infer --device cuda` (bf16 compute) with
# the bf16 criterion TOL=5e-2 (bench/records/MODEL_CUDA.md: bf16 rounding of ~10 tensors per block adds
# up to ~1.4e-2 at 12 blocks); TOL overrides either default.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-kat_tiny_patch16_224}
BATCH=${2:-2}
PY=${PYTHON:-/usr/bin/python3}
KAT_BIN=${KAT_BIN:-build/kat}
DEVICE=${DEVICE:-cpu}
if [ "$DEVICE" = cpu ]; then TOL=${TOL:-1e-5}; else TOL=${TOL:-5e-2}; fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
$PY reference/make_random_weights.py --config "$MODEL" --seed 0 --out "$T/w.safetensors" --input-out "$T/i.safetensors" --batch "$BATCH"
$PY reference/infer_ref.py --config "$MODEL" --weights "$T/w.safetensors" --input "$T/i.safetensors" --output "$T/ref.safetensors"
"$KAT_BIN" infer --model "$MODEL" --weights "$T/w.safetensors" --input "$T/i.safetensors" --output "$T/ours.safetensors" --device "$DEVICE"
$PY reference/compare_outputs.py "$T/ours.safetensors" "$T/ref.safetensors" --tol "$TOL"
