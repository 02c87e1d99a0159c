#!/usr/bin/env bash
# Checks that every C++/CUDA source is formatted as .clang-format says (Debian's clang-format 14;
# other versions may format differently). Lists the files that differ and exits 1; 0 when all match.
#   scripts/check_format.sh           check
#   scripts/check_format.sh --fix     reformat those files in place
#   CLANG_FORMAT=clang-format-14 scripts/check_format.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CF=${CLANG_FORMAT:-clang-format}
command -v "$CF" >/dev/null || { echo "check_format: $CF not found (apt-get install clang-format)" >&2; exit 2; }
mapfile -t files < <(git ls-files -- '*.cpp' '*.h' '*.cu' '*.cuh')
if [ "${1:-}" = "--fix" ]; then
  "$CF" -i --style=file "${files[@]}"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  "$CF" --style=file "$f" | cmp -s "$f" - || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "check_format: ${#bad[@]} of ${#files[@]} files differ from .clang-format ($("$CF" --version)):" >&2
  printf '  %s\n' "${bad[@]}" >&2
  echo "fix: scripts/check_format.sh --fix   (or: $CF -i FILE; see a diff: $CF FILE | diff FILE -)" >&2
  exit 1
fi
echo "check_format: ${#files[@]} files formatted"
