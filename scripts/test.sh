#!/usr/bin/env bash
# Runs the CPU test suite (everything labelled cpu), then the Python package's tests
# (scripts/test_python.sh: pip install . into a virtual environment, pytest tests/python).
# KAT_PYTHON_TESTS=0 leaves the Python part out (and says so). GPU tests (label gpu) need a GPU:
# ctest -L gpu; the Python tests run their CUDA cases wherever torch sees a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/kat ] || scripts/setup.sh
cmake --build build -j"$(nproc)"
ctest --test-dir build -L cpu --output-on-failure -j"$(nproc)" "$@"
if [ "${KAT_PYTHON_TESTS:-1}" = 0 ]; then
  echo "Python tests skipped (KAT_PYTHON_TESTS=0)"
else
  scripts/test_python.sh
fi
