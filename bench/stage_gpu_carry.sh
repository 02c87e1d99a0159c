#!/usr/bin/env bash
# Stage binaries for the lent GPU machine (the device tool's `run`, which copies the working tree
# plus the ignored paths named in `carry`, 64 MiB in all). That machine has nvcc, CUDA, torch and
# timm but none of our Debian packages, so we build here and carry the executables with the
# shared libraries they need from Debian (OpenBLAS gzipped: 36 -> 12 MB) and libnvjpeg.so.13 from
# pip's nvidia-nvjpeg wheel (the GPU pipeline, `kat train --decode gpu`; gzipped). cuDNN (the cuDNN
# attention, `--attention cudnn`, in a build that found it: cmake/cudnn.cmake, e.g. with CUDNN_ROOT and
# CUDNN_FRONTEND_INCLUDE_DIR in the environment) is never carried (~900 MB): run_env.sh puts
# PyTorch's cuDNN 9 (pip's nvidia-cudnn-cu13) on the library path.
#
#   bench/stage_gpu_carry.sh [TARGET ...]     default: kat kat_gpu_tests data_bench
#     -> .carry/gpurun/{TARGET...,lib/,run_env.sh}   (.carry/ is git-ignored)
#   then:  run(command="source .carry/gpurun/run_env.sh && kat_gpu_tests && kat bench train ...
#               --device cuda", carry=[".carry/gpurun"])
# Build: build-cuda/ (CUDA on, PNG plots off: librsvg would add a dozen more libraries).
# nvJPEG and cuDNN: a toolkit without them (the dev VM's) takes pip's wheels:
#   eval "$(bench/fetch_gpu_sdks.sh)" && bench/stage_gpu_carry.sh ...
# (without nvJPEG `kat train --decode gpu` is refused and the GpuDataDir tests skip: said below).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(kat kat_gpu_tests data_bench)
cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DKAT_CUDA=ON -DKAT_PNG=OFF > /dev/null
ninja -C build-cuda "${TARGETS[@]}"
D=.carry/gpurun
rm -rf "$D"
mkdir -p "$D/lib"
# Executables gzipped in place (mode kept, so gunzip gives them back executable): ~12 -> 4 MB each.
for t in "${TARGETS[@]}"; do strip -o "$D/$t" "build-cuda/$t" && gzip -1 -f "$D/$t"; done
# Every non-system, non-CUDA library the executables load (the CUDA runtime and cuBLAS are there;
# glibc's own, libmvec included, must come from the device: its glibc needs >= 2.35 for the
# vector erff that src/ops/cpu/vec_math.h uses).
for t in "${TARGETS[@]}"; do ldd "build-cuda/$t"; done | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    linux-vdso*|ld-linux*|libc.so*|libm.so*|libmvec.so*|libstdc++*|libgcc_s*|libdl.so*|librt.so*|libpthread*|libz.so*) ;;
    libcuda.so*|libcudart*|libcublas*|libcublasLt*|libnvrtc*|libnccl*) ;;  # NCCL: ~340 MB, torch's is there
    libcudnn*) ;;  # ~900 MB with its sub-libraries: torch's is there (run_env.sh)
    libopenblas*) gzip -1 -c "$lib" > "$D/lib/$(basename "$lib").gz" ;;
    libnvjpeg*) gzip -1 -c "$lib" > "$D/lib/$(basename "$lib").gz" ;;  # pip's nvidia-nvjpeg (6 -> ~3 MB)
    *) cp -L "$lib" "$D/lib/" ;;
  esac
done
cat > "$D/run_env.sh" <<'ENV'
# source on the GPU machine from the repository root: PATH, libraries, configs.
G=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for z in "$G"/*.gz "$G"/lib/*.gz; do [ -e "$z" ] && gunzip -f "$z"; done
export PATH=$G:/usr/local/cuda/bin:$PATH
# nvidia.nccl may be a namespace package (no __file__): take its __path__. Without it, the loader
# still finds a system libnccl (the device has one under /usr/local/cuda).
NCCL_LIB=$(python3 -c "import nvidia.nccl as m, os; print(os.path.join(list(m.__path__)[0], 'lib'))" 2>/dev/null)
# cuDNN 9 (binaries built with cuDNN need libcudnn.so.9 to start): PyTorch's, from pip's nvidia-cudnn
# wheel (a namespace package too).
CUDNN_LIB=$(python3 -c "import nvidia.cudnn as m, os; print(os.path.join(list(m.__path__)[0], 'lib'))" 2>/dev/null)
export LD_LIBRARY_PATH=$G/lib:/usr/local/cuda/lib64:${NCCL_LIB:+$NCCL_LIB:}${CUDNN_LIB:+$CUDNN_LIB:}${LD_LIBRARY_PATH:-}
for b in "$G"/*; do
  if [ -f "$b" ] && [ -x "$b" ] && ldd "$b" 2>/dev/null | grep -q "libcudnn.so.9 => not found"; then
    echo "run_env.sh: $(basename "$b") needs libcudnn.so.9 and no cuDNN 9 was found (pip's nvidia-cudnn-cu13)" >&2
  fi
done
export KAT_CONFIG_DIR=$(cd "$G/../.." && pwd)/configs
ENV
for t in "${TARGETS[@]}"; do
  case "$t" in kat | kat_gpu_tests | op_bench) ;; *) continue ;; esac  # the ones with the model's attention
  if ldd "build-cuda/$t" | grep -q libcudnn; then
    echo "$t: cuDNN attention built in (--attention cudnn)"
  else
    echo "$t: no cuDNN (cmake/cudnn.cmake did not find it: eval \"\$(bench/fetch_gpu_sdks.sh)\" first)"
  fi
done
for t in "${TARGETS[@]}"; do
  case "$t" in kat | kat_gpu_tests | data_bench) ;; *) continue ;; esac  # the ones that decode JPEGs
  ldd "build-cuda/$t" | grep -q libnvjpeg ||
    echo "$t: no nvJPEG (cmake/nvjpeg.cmake did not find it: set NVJPEG_ROOT, see above): no GPU JPEG decoding"
done
du -sh "$D"
ls "$D" "$D/lib"
size=$(du -sm "$D" | cut -f1)
[ "$size" -lt 64 ] || echo "warning: $D is ${size} MiB; the carry limit is 64 MiB in all"
