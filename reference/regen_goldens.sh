#!/bin/sh
# Regenerate every golden file in tests/golden/ (run from anywhere). Uses Debian's python3 + torch.
set -e
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
P=/usr/bin/python3
E="$ROOT/reference/export_golden.py"
G="$ROOT/tests/golden"
$P "$E" --config golden_kat_small    --batch 3 --seed 1 --label-smoothing 0.1 --out "$G/golden_kat_small.safetensors"
$P "$E" --config golden_kat_pergroup --batch 2 --seed 2 --label-smoothing 0.0 --soft-targets --out "$G/golden_kat_pergroup.safetensors"
$P "$E" --config golden_deit_small   --batch 3 --seed 3 --label-smoothing 0.1 --out "$G/golden_deit_small.safetensors"
$P "$ROOT/reference/pos_embed_golden.py" "$G/pos_embed_resample.safetensors"
# needs python3-pil and python3-torchvision as well
(cd "$ROOT/reference" && $P pil_eval_golden.py "$G/pil_eval.safetensors")
