#!/usr/bin/env bash
# Compile the CUDA residual-search kernel on its own (no torch headers, no GPU needed), so a build
# break is caught on any machine with nvcc. Usage: tools/check_cuda_build.sh [arch ...]
# (default arches: sm_80 sm_90). Exits 0 with a skip message when nvcc is absent.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$here/codec/kernels/rvq_search.cu"

nvcc="$(command -v nvcc || true)"
if [[ -z "$nvcc" ]]; then
  for candidate in "${CUDA_HOME:-}/bin/nvcc" /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc; do
    if [[ -x "$candidate" ]]; then nvcc="$candidate"; break; fi
  done
fi
if [[ -z "$nvcc" ]]; then
  echo "check_cuda_build: SKIP: nvcc not found (put it on PATH or set CUDA_HOME) - $src not compiled"
  exit 0
fi

arches=("$@")
[[ ${#arches[@]} -eq 0 ]] && arches=(sm_80 sm_90)
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

echo "check_cuda_build: $("$nvcc" --version | tail -1)"
for arch in "${arches[@]}"; do
  # -Werror all-warnings: a warning in the kernel (e.g. an unused variable) fails the check too.
  "$nvcc" -O3 -std=c++17 -arch="$arch" -Werror all-warnings -Xptxas -v -c "$src" -o "$out/rvq_search_$arch.o" \
    2> "$out/log_$arch.txt" || { cat "$out/log_$arch.txt"; echo "check_cuda_build: FAIL ($arch)"; exit 1; }
  # ptxas -v reports registers, spills and shared memory per kernel: print them, fail on spills.
  grep -E "Used|spill" "$out/log_$arch.txt" | sed "s/^/  [$arch] /"
  if grep -E "[1-9][0-9]* bytes spill (stores|loads)" "$out/log_$arch.txt" > /dev/null; then
    echo "check_cuda_build: FAIL ($arch): register spills"
    exit 1
  fi
done
echo "check_cuda_build: OK (${arches[*]})"
