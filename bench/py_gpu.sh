#!/usr/bin/env bash
# The Python package on the GPU machine, in one call (issue #12's GPU rows), everything under $OUT:
#   1. pip install of this checkout with its CUDA kernels (KAT_PY_MINIMAL=ON: the op module alone,
#      all the tests and the bench need; the image has none of the engine's Debian libraries)
#                                                        -> $OUT/py_gpu/pip.log
#   2. the pytest suite on CUDA (tests/python: the op on every GPU, under torch.compile, bf16
#      autocast, CUDA graphs)                           -> $OUT/py_gpu/pytest_gpu.txt
#      (pytest from the image; else from wheels in .carry/wheels, made on the dev VM with
#      `pip download pytest --only-binary :all: --python-version 3.12 -d .carry/wheels`)
#   3. bench/torch_grkan_train.py: DeiT-T, KAT-T with GR-KAN as plain ops and with our op, eager
#      at every batch of BATCHES and compiled at the first; the activations alone; profiles of
#      eager and of compiled steps of DeiT-T and of KAT-T with our op (the compiled ones with
#      dynamo's graph breaks)                             -> bench.log, and bench.tgz holding
#                                                           bench/{table.md,results.csv,op_bench.md,
#                                                           profile_*.txt} and pip.log (the device
#                                                           tool brings back at most 8 files)
# ~7 minutes on one H100 (the compiled rows are most of it; PYTEST_TIMEOUT=240 and
# BENCH_TIMEOUT=420 s bound the two steps, the bench's table is rewritten after every row so a cut
# keeps what was measured). With DIAG=1, bench/py_diag.sh runs first (~3 minutes more: the
# exception-crash diagnosis, $OUT/py_diag).
# usage: OUT=/some/dir [BATCHES=256,512] [ITERS=20] [DIAG=0] bench/py_gpu.sh    (PY=python3)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
D=${OUT:?set OUT}/py_gpu
mkdir -p "$D"
t0=$(date +%s)
stamp() { echo "[$(($(date +%s) - t0)) s] $*" | tee -a "$D/steps.txt"; }

if [ "${DIAG:-0}" = 1 ]; then
  stamp "py_diag"
  OUT=$OUT bash bench/py_diag.sh
fi

stamp "pip install (KAT_PY_MINIMAL=ON, CUDA)"
"$PY" -m pip install -v --no-build-isolation --no-deps . -C cmake.define.KAT_PY_MINIMAL=ON \
  -C build-dir=/tmp/kat_py_gpu_build >"$D/pip.log" 2>&1 || {
  stamp "pip install FAILED (pip.log)"
  exit 1
}
grep -E "kat: (CUDA backend|Python module|_ops links)" "$D/pip.log" | tee -a "$D/steps.txt"
(cd /tmp && "$PY" -c "import kat, torch; print('kat.has_cuda', kat.has_cuda(), 'torch', torch.__version__, \
  torch.cuda.get_device_name(0))") 2>&1 | tee -a "$D/steps.txt"

if ! "$PY" -c "import pytest" 2>/dev/null; then
  stamp "pytest from .carry/wheels"
  "$PY" -m pip install -q --no-index --find-links .carry/wheels pytest >>"$D/pip.log" 2>&1 ||
    stamp "pytest install FAILED"
fi
stamp "pytest (tests/python, CUDA)"
(cd tests/python && timeout "${PYTEST_TIMEOUT:-240}" "$PY" -X faulthandler -m pytest -q -rs -p no:cacheprovider . \
  >"$D/pytest_gpu.txt" 2>&1)
echo "pytest exit $?" >>"$D/pytest_gpu.txt"
tail -4 "$D/pytest_gpu.txt" | tee -a "$D/steps.txt"

stamp "bench/torch_grkan_train.py --batch ${BATCHES:-256,512}"
PYTHONUNBUFFERED=1 timeout "${BENCH_TIMEOUT:-420}" "$PY" bench/torch_grkan_train.py --batch "${BATCHES:-256,512}" \
  --iters "${ITERS:-20}" --out "$D/bench" --profile >"$D/bench.log" 2>&1
echo "bench exit $?" >>"$D/bench.log"
cat "$D/bench/table.md" 2>/dev/null
grep -H "^# dynamo\|^# per step" "$D"/bench/profile_*.txt 2>/dev/null | tee -a "$D/steps.txt"
tar -C "$D" -czf "$D/bench.tgz" bench pip.log && rm -rf "$D/bench" "$D/pip.log"
stamp "done"
