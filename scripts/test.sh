#!/usr/bin/env bash
# Runs the CPU test suite (everything labelled cpu). GPU tests (label gpu) need a GPU: ctest -L gpu.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/kat ] || scripts/setup.sh
cmake --build build -j"$(nproc)"
ctest --test-dir build -L cpu --output-on-failure -j"$(nproc)" "$@"
