#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it.
# torch comes from `pip install torch==2.13.0` (the local CPU build); installing it first means the
# package's `torch>=2.1` requirement is already met and pip never pulls the CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[dev]"
python -m pytest -q "$@"
