#!/usr/bin/env bash
# Diagnosis of the interpreter crash seen only on the GPU machine (Ubuntu 24.04, g++ 13.3, Python
# 3.12.3, torch 2.11): SIGSEGV at the first kat::Error raised through kat._ops.forward. One call,
# under 3 minutes on 16 cores, everything under $OUT/py_diag/:
#   env.txt          the toolchain, Python, glibc, CPU flags (CET), the builds' dynamic symbols
#   build_*.log      six minimal builds of kat._ops + kat._diag (src/python/diag_module.cpp), in
#                    parallel, differing in one switch each from the build that crashed ("orig"):
#                      orig        KAT_PY_ERRORS=translator, op symbols exported (the crashed code)
#                      ship        the defaults now: errors converted locally, op symbols hidden
#                      translator  orig with the op symbols hidden
#                      cudart_shared  orig linking libcudart.so instead of cudart_static
#                      nocuda      orig without CUDA (no nvcc objects, no cudart)
#                      dbg         orig as RelWithDebInfo (symbols for the backtrace)
#   summary.md, cases/  bench/py_diag.py: each exception case in its own `python3 -X faulthandler`
#                    child (bare, after `import torch`, with a CUDA context, after running the op,
#                    and inside a pytest test after running the op), exit status and last lines
#   ld_bindings_*.txt   LD_DEBUG=bindings of the unwinder / C++ runtime symbols in one case
#   backtrace.txt    gdb (or cuda-gdb: the image has no gdb) `run` + `bt` of the first crash
# usage: OUT=/some/dir bench/py_diag.sh        (PY=python3 by default)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
D=${OUT:?set OUT}/py_diag
W=${PY_DIAG_WORK:-/tmp/kat_py_diag}
mkdir -p "$D" "$W"
t0=$(date +%s)

{
  echo "## $(date -u +%FT%TZ)  $(uname -srm)"
  grep -E '^(PRETTY_NAME)=' /etc/os-release
  ldd --version 2>&1 | head -1
  c++ --version | head -1
  (nvcc --version 2>/dev/null || /usr/local/cuda/bin/nvcc --version 2>/dev/null) | tail -2
  "$PY" - <<'EOF'
import os, sys, sysconfig, importlib.metadata as md
print("python", sys.version.replace("\n", " "), "|", sys.executable, "->", os.path.realpath(sys.executable))
print("CC", sysconfig.get_config_var("CC"), "| CFLAGS", sysconfig.get_config_var("CFLAGS"))
for p in ("torch", "nanobind", "scikit-build-core", "numpy", "pytest", "jax", "jaxlib", "onnx"):
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "-")
status = open("/proc/self/status").read()
print("status:", [l for l in status.splitlines() if "x86" in l.lower() or "feature" in l.lower()])
EOF
  echo "--- after loading every pytest plugin and torch: plugins, modules of nanobind users, shared objects"
  "$PY" - <<'PYEOF'
import importlib.metadata as md
import sys
eps = list(md.entry_points(group="pytest11"))
print("pytest11 plugins:", [f"{ep.name}={ep.value}" for ep in eps])
for ep in eps:
    try:
        ep.load()
    except Exception as e:
        print("  plugin", ep.name, "failed:", type(e).__name__, e)
import torch  # noqa: E402,F401
print("jax/jaxlib/onnx/tensorstore/cupy modules:",
      sorted({m.split(".")[0] for m in sys.modules} & {"jax", "jaxlib", "onnx", "tensorstore", "cupy"}))
print("\n".join(sorted({line.split()[-1] for line in open("/proc/self/maps") if ".so" in line})))
PYEOF
  echo "cpu flags (cet): $(grep -o -w -E 'shstk|ibt|user_shstk' /proc/cpuinfo | sort | uniq -c | tr '\n' ' ')"
  echo "--- ldd python"; ldd "$(readlink -f "$(command -v "$PY")")" 2>&1
  echo "--- debuggers: gdb $(command -v gdb || echo -) cuda-gdb $(command -v cuda-gdb || echo -)"
} >"$D/env.txt" 2>&1

# ---- builds (parallel; each a wheel unpacked into its own site folder) ------------------------
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-4}
build() {  # name, then -C options
  local name=$1
  shift
  rm -rf "$W/$name/site" "$W/$name/wheel"
  if "$PY" -m pip wheel -v --no-build-isolation --no-deps . -C build-dir="$W/$name/build" \
    -C cmake.define.KAT_PY_MINIMAL=ON -C cmake.define.KAT_PY_DIAG=ON "$@" -w "$W/$name/wheel" \
    >"$D/build_$name.log" 2>&1 &&
    "$PY" -m zipfile -e "$W/$name/wheel/"kat-*.whl "$W/$name/site" >>"$D/build_$name.log" 2>&1; then
    echo "$name built"
  else
    echo "$name BUILD FAILED (build_$name.log)"
  fi
}
ORIG=(-C cmake.define.KAT_PY_ERRORS=translator -C cmake.define.KAT_PY_VISIBILITY=default)
build orig "${ORIG[@]}" &
build ship &
build translator -C cmake.define.KAT_PY_ERRORS=translator &
build cudart_shared "${ORIG[@]}" -C cmake.define.KAT_PY_CUDART=shared &
build nocuda "${ORIG[@]}" -C cmake.define.KAT_CUDA=OFF &
build dbg "${ORIG[@]}" -C cmake.build-type=RelWithDebInfo &
wait
echo "builds: $(($(date +%s) - t0)) s" | tee -a "$D/env.txt"
sites=()
for b in orig ship translator cudart_shared nocuda dbg; do
  if ls "$W/$b/site/kat/"_ops*.so >/dev/null 2>&1; then
    sites+=("$b=$W/$b/site")
    {
      echo "--- $b: _ops dynamic symbols / needed libraries"
      nm -D --defined-only "$W/$b/site/kat/"_ops*.so | c++filt | cut -c1-140 | grep -c . | sed 's/^/defined dynamic symbols: /'
      readelf -d "$W/$b/site/kat/"_ops*.so | grep -E 'NEEDED|RPATH|RUNPATH'
    } >>"$D/env.txt" 2>&1
  fi
done

# ---- the cases ------------------------------------------------------------------------------
PY_DIAG_BUDGET_S=${PY_DIAG_BUDGET_S:-100} "$PY" bench/py_diag.py "$D" "${sites[@]}" >"$D/cases_stdout.txt" 2>&1
tail -5 "$D/cases_stdout.txt"

# ---- which objects the dynamic linker binds the C++ runtime and unwinder symbols to ----------
bind_log() {  # name, python code; site of "orig"
  rm -f "$W/ld."*
  LD_DEBUG=bindings LD_DEBUG_OUTPUT="$W/ld" PYTHONPATH="$W/orig/site" timeout 60 "$PY" -c "$2" >/dev/null 2>&1
  echo "exit $?" >"$D/ld_bindings_$1.txt"
  # every binding made for kat/_ops, and the C++ runtime / unwinder symbols of the throw path
  cat "$W/ld."* 2>/dev/null |
    grep -E "kat/_ops|symbol \`(_Unwind_RaiseException|_Unwind_Resume|_Unwind_Find_FDE|__cxa_throw|__cxa_rethrow|__cxa_begin_catch|__cxa_allocate_exception|__gxx_personality_v0|_ZSt17rethrow_exception|_ZSt17current_exception)'" |
    sed -E 's/^ *[0-9]+: *//' | sort | uniq -c | sort -rn | head -200 >>"$D/ld_bindings_$1.txt"
}
if [ -d "$W/orig/site" ]; then
  CODE="from kat import _ops
try:
    _ops.forward(-1, 'f32', 0, 0, 0, 0, rows=1, dim=10, groups=8, num_rows=1, m=5, n=4)
except ValueError as e:
    print(e)"
  bind_log bare "$CODE"
  bind_log torch "import torch
$CODE"
fi

# ---- a native backtrace of the first crash ----------------------------------------------------
GDB=$(command -v gdb || command -v cuda-gdb || true)
if [ -f "$D/first_crash.env" ] && [ -n "$GDB" ]; then
  site=$(sed -n 1p "$D/first_crash.env")
  how=(-X faulthandler)
  [ "$(sed -n 3p "$D/first_crash.env")" = pytest ] && how=(-X faulthandler -m pytest -q -s -p no:cacheprovider)
  echo "# $GDB on $(sed -n 2p "$D/first_crash.env")" >"$D/backtrace.txt"
  (cd /tmp && PYTHONPATH="$site" timeout 120 "$GDB" -batch -nx -ex "set pagination off" -ex "set confirm off" \
    -ex "handle SIGPIPE nostop noprint" -ex run -ex bt -ex "info registers rip rsp" -ex 'x/8i $pc-16' \
    -ex "info sharedlibrary" --args "$PY" "${how[@]}" "$D/first_crash.py") >>"$D/backtrace.txt" 2>&1
  echo "debugger exit $?" >>"$D/backtrace.txt"
elif [ -f "$D/first_crash.env" ]; then
  echo "no gdb / cuda-gdb on this machine" >"$D/backtrace.txt"
fi
echo "py_diag: $(($(date +%s) - t0)) s; $D/summary.md" | tee -a "$D/env.txt"
