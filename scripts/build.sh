#!/usr/bin/env bash
# Configures and builds pfhe (Release) into build/. Used by test.sh and demo.sh; arguments
# go to install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh "$@"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)"
