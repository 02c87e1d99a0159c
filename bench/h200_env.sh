# Shared preamble of bench/run_{grkan,ops,model}_h200.sh (sourced, not run): paths, compilers,
# flags, the log helper, the environment header of $OUT/build.log, and the OpenMP flag probe.
# Set before sourcing: KAT_BENCH_NAME (grkan | ops | model): default $OUT = out/$KAT_BENCH_NAME and
# $BUILD = /tmp/${KAT_BENCH_NAME}_build (the build folder is recreated empty).
# Provides: ROOT OUT BUILD NVCC ARCH NVFLAGS OMPFLAG, log(), compile_variants().
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$ROOT/out/$KAT_BENCH_NAME}
mkdir -p "$OUT"
BUILD=${BUILD:-/tmp/${KAT_BENCH_NAME}_build}
rm -rf "$BUILD"
mkdir -p "$BUILD"
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
ARCH=${ARCH:--gencode=arch=compute_90a,code=sm_90a}
NVFLAGS="-std=c++20 -O3 $ARCH --expt-relaxed-constexpr -lineinfo -I$ROOT/src"

log() { echo "== $*" | tee -a "$OUT/build.log"; }

{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.limit --format=csv 2>&1
  "$NVCC" --version | tail -2
  g++ --version | head -1
  echo "cores: $(nproc)"
} > "$OUT/build.log" 2>&1
cat "$OUT/build.log"

OMPFLAG=-fopenmp
echo 'int main(){}' > "$BUILD/omp.cpp"
g++ -fopenmp "$BUILD/omp.cpp" -o "$BUILD/omp" 2>/dev/null || OMPFLAG=""
log "OpenMP flag: '${OMPFLAG}'"

# compile_variants SRC STEM: compile SRC once per tuning variant of $VARIANTS ("name:flags;...",
# flags are -D options) in the background, into $BUILD/STEM_<name>.o (ptxas -v output in
# $BUILD/STEM_<name>.log); appends the variant names to `names` and the job ids to `pids`.
compile_variants() {
  local src=$1 stem=$2 v name flags
  IFS=';' read -ra VLIST <<< "$VARIANTS"
  for v in "${VLIST[@]}"; do
    name=${v%%:*}
    flags=${v#*:}
    names+=("$name")
    "$NVCC" $NVFLAGS $flags -Xptxas -v -c "$src" -o "$BUILD/${stem}_$name.o" > "$BUILD/${stem}_$name.log" 2>&1 &
    pids+=($!)
  done
}
