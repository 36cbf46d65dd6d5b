#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole test suite with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh --with-tooling
ctest --test-dir build --output-on-failure -j "$(nproc)"
