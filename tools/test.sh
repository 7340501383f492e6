#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it (CI runs this through .ci/run).
#  - torch from `pip install torch==2.13.0` (the local CPU build), installed first so that the package's
#    `torch>=2.1` requirement is already met and pip never pulls the CUDA wheels;
#  - the package with the extras the tests exercise (training, evaluation, the WebSocket server, ONNX export);
#  - Debian's opus-tools (the Opus baseline) and chromium + chromium-driver (the listening-page test).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[dev,train,eval,serve,recipes,onnx]"
need=()
command -v opusenc >/dev/null || need+=(opus-tools)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; } \
    || echo "test.sh: could not install ${need[*]} (not root, or no apt); the tests that need them will say so" >&2
fi
if [ -x tools/check_cuda_build.sh ]; then
  tools/check_cuda_build.sh  # compiles the CUDA kernel with nvcc when nvcc is present (no GPU needed)
fi
python -m pytest -q "$@"
