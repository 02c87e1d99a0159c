#!/usr/bin/env bash
# CPU side-by-side: `kat bench` and PyTorch (bench/torch_cpu_bench.py) on the same models, same
# machine, same run. Needs build/kat and /usr/bin/python3 with torch (Debian python3-torch).
#   bench/run_cpu_bench.sh [ITERS]      -> CSV on stdout, a table at the end
set -euo pipefail
cd "$(dirname "$0")/.."
ITERS=${1:-5}
PY=${PYTHON:-/usr/bin/python3}
T=$(nproc)
echo "mode,model,batch,threads,img_per_s,ms,device_mib" | tee /tmp/kat_cpu_bench.csv
for spec in "kat_micro_patch4_28 128" "deit_micro_patch4_28 128" "kat_tiny_patch16_224 32" "deit_tiny_patch16_224 32"; do
  set -- $spec
  build/kat bench infer --model "$1" --batch "$2" --iters "$ITERS" --csv | sed 's/^infer/kat_infer/' | tee -a /tmp/kat_cpu_bench.csv
  build/kat bench train --model "$1" --batch "$2" --iters "$ITERS" --csv | sed 's/^train/kat_train/' | tee -a /tmp/kat_cpu_bench.csv
  $PY bench/torch_cpu_bench.py "$1" "$2" "$ITERS" --threads "$T" | tee -a /tmp/kat_cpu_bench.csv
done
$PY - <<'PY'
import csv, collections
rows = list(csv.DictReader(open("/tmp/kat_cpu_bench.csv")))
d = collections.defaultdict(dict)
for r in rows:
    eng, mode = r["mode"].split("_")
    d[(r["model"], r["batch"], mode)][eng] = float(r["img_per_s"])
print(f"\n{'model':24s} {'batch':>5s} {'mode':6s} {'kat img/s':>10s} {'torch img/s':>12s} {'ratio':>6s}")
for (m, b, mode), v in d.items():
    k, t = v.get("kat", float("nan")), v.get("torch", float("nan"))
    print(f"{m:24s} {b:>5s} {mode:6s} {k:10.1f} {t:12.1f} {k / t:6.2f}x")
PY
