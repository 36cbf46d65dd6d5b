#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole test suite with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh --with-tooling
# As many tests at once as cores, and most pfhe processes run an OpenMP team of that many
# threads: OpenMP threads that spin while waiting burn the core another test needs. Sleeping
# waits measured the ONNX import check beside cli_flow (the two at once, as here) 261 / 261 s
# -> 170 s and cli_flow 312 / 304 s -> 278 s on the 2-core AVX2 machine (docs/BENCHMARKS.md).
export OMP_WAIT_POLICY=PASSIVE
ctest --test-dir build --output-on-failure -j "$(nproc)"
