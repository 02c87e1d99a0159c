#!/usr/bin/env bash
# The Python package's tests (tests/python, pytest), as CI runs them (started by scripts/test.sh):
# a virtual environment with PyTorch, numpy, pytest, scikit-build-core and nanobind from PyPI,
# `pip install .` into it, then pytest.
#   KAT_PY_VENV=DIR   the environment (default ~/.cache/kat/pyvenv; reused when present, so only the
#                     first run downloads PyTorch: PyPI's Linux wheel pulls in the CUDA libraries,
#                     ~5.4 GB installed, ~2 min on a fast link; it also runs on machines without a GPU)
#   KAT_PY_CUDA=ON    build the package's CUDA kernels (default: only when nvidia-smi sees a GPU;
#                     otherwise the CUDA sources are still compiled by the main build, and the
#                     op-only CUDA module is built once here as a link check when nvcc is present)
# Needs Debian's python3-venv and python3-dev (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
VENV=${KAT_PY_VENV:-$HOME/.cache/kat/pyvenv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating the Python environment $VENV"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torch numpy pytest "scikit-build-core>=0.8" "nanobind>=1.4"

cuda=${KAT_PY_CUDA:-}
if [ -z "$cuda" ]; then
  cuda=OFF
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then cuda=AUTO; fi
fi
# build-py/: kept between runs (incremental). --no-build-isolation: the build requirements above.
"$VENV/bin/python" -m pip install -q --no-build-isolation . -C build-dir=build-py \
  -C cmake.define.KAT_CUDA="$cuda"
if [ "$cuda" = OFF ] && { command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; }; then
  echo "link check: the op-only module with its CUDA kernels (KAT_PY_MINIMAL=ON)"
  "$VENV/bin/python" -m pip wheel -q --no-build-isolation --no-deps . -C build-dir=build-py-minimal \
    -C cmake.define.KAT_PY_MINIMAL=ON -C cmake.define.KAT_CUDA=ON -w build-py-minimal/wheel
fi
export KAT_BINARY=${KAT_BINARY:-$PWD/build/kat}
cd tests/python  # not the repository root: `import kat` must find the installed package
"$VENV/bin/python" -m pytest -q -rs . "$@"
