#!/usr/bin/env bash
# Builds the CPU engine and its tests under AddressSanitizer + UndefinedBehaviorSanitizer into
# build-asan/ (no CUDA) and runs the CPU test suite there. Any sanitizer report fails the run.
#   scripts/test_sanitizers.sh                 build + run every CPU test
#   scripts/test_sanitizers.sh -R Ops          extra arguments go to ctest
# -O1 -g: usable stacks at a tolerable speed; assertions on (no NDEBUG). -fno-sanitize-recover:
# undefined behaviour stops the test instead of printing and going on.
set -euo pipefail
cd "$(dirname "$0")/.."
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Sanitize -DKAT_CUDA=OFF -DKAT_BENCHES=OFF -DKAT_SLOW_TEST_TIMEOUT=1800 \
  -DCMAKE_CXX_FLAGS_SANITIZE="-O1 -g $SAN" \
  -DCMAKE_EXE_LINKER_FLAGS_SANITIZE="$SAN" -DCMAKE_SHARED_LINKER_FLAGS_SANITIZE="$SAN"
cmake --build build-asan -j"$(nproc)"
# halt_on_error: the first report ends the test with a failure. Leak checking stays on; the leaks
# of system libraries that never free their caches are suppressed in scripts/lsan_suppressions.txt.
# OpenMP (libgomp) and OpenBLAS need no special options: their thread pools are reported neither as
# leaks nor as errors.
export ASAN_OPTIONS=${ASAN_OPTIONS:-"halt_on_error=1:detect_leaks=1"}
export LSAN_OPTIONS=${LSAN_OPTIONS:-"suppressions=$PWD/scripts/lsan_suppressions.txt:print_suppressions=0"}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-"print_stacktrace=1:halt_on_error=1"}
# Left out here (and why):
#   consumer_find_package: checks packaging, not memory; the consumer project would also need the
#     sanitizer flags to link against this build (it runs in the normal suite, scripts/test.sh).
EXCLUDE="^consumer_find_package$"
ctest --test-dir build-asan -L cpu -E "$EXCLUDE" --output-on-failure -j"$(nproc)" "$@"
