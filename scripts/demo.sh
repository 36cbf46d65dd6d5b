#!/usr/bin/env bash
# Installs dependencies, builds, and runs the encrypted demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
./build/apps/pfhe_demo "$@"
