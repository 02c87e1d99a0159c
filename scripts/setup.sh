#!/usr/bin/env bash
# Installs the Debian packages the engine needs and builds it (Release) into build/.
#   scripts/setup.sh            install + build
#   KAT_CUDA=OFF scripts/setup.sh   build without the CUDA backend even if nvcc is present
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(build-essential cmake ninja-build pkg-config libopenblas-openmp-dev nlohmann-json3-dev libcli11-dev
      libgtest-dev clang-format libpng-dev libjpeg-dev zlib1g-dev librsvg2-dev fonts-dejavu-core dataset-fashion-mnist
      python3-venv python3-dev)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKAT_CUDA="${KAT_CUDA:-AUTO}"
cmake --build build -j"$(nproc)"
echo "built: build/kat"
