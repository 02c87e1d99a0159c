#!/usr/bin/env bash
# The optional GPU SDKs of a CUDA build, from PyPI, for a dev machine whose CUDA toolkit lacks them
# (the dev VM's nvcc has neither nvJPEG nor cuDNN): pip's nvidia-nvjpeg (CUDA 13), nvidia-cudnn-cu13
# and nvidia-cudnn-frontend wheels unpacked under DIR (default /tmp/kat_gpu_sdks), then the
# environment for cmake/nvjpeg.cmake and cmake/cudnn.cmake printed, e.g.
#   eval "$(bench/fetch_gpu_sdks.sh)" && bench/stage_gpu_carry.sh kat kat_gpu_tests data_bench op_bench fp8_bench
# Downloads ~530 MB once (cuDNN); later runs reuse DIR.
set -euo pipefail
DIR=${1:-/tmp/kat_gpu_sdks}
mkdir -p "$DIR/wheels"
for pkg in nvidia-nvjpeg nvidia-cudnn-cu13 nvidia-cudnn-frontend; do
  if ! ls "$DIR/wheels/$(echo "$pkg" | tr - _)"-*.whl > /dev/null 2>&1; then
    python3 -m pip download -q --no-deps -d "$DIR/wheels" "$pkg" >&2
  fi
done
for w in "$DIR"/wheels/*.whl; do
  stamp="$DIR/.unpacked_$(basename "$w")"
  [ -e "$stamp" ] || { python3 -m zipfile -e "$w" "$DIR/sdk" && touch "$stamp"; }
done
NVJPEG_ROOT=$(dirname "$(dirname "$(find "$DIR/sdk" -name nvjpeg.h | head -1)")")
CUDNN_ROOT=$(dirname "$(dirname "$(find "$DIR/sdk" -name cudnn_version.h | head -1)")")
CUDNN_FRONTEND_INCLUDE_DIR=$(dirname "$(find "$DIR/sdk" -name cudnn_frontend.h | head -1)")
echo "export NVJPEG_ROOT=$NVJPEG_ROOT CUDNN_ROOT=$CUDNN_ROOT CUDNN_FRONTEND_INCLUDE_DIR=$CUDNN_FRONTEND_INCLUDE_DIR"
