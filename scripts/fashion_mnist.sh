#!/usr/bin/env bash
# Reproduces the Fashion-MNIST table of docs/BENCHMARKS.md: installs dependencies (with
# Debian's python3-torch and dataset-fashion-mnist), builds, optionally retrains the model
# (--train: tools/train_fashion_mnist.py, 5 epochs, ~5 minutes on 2 cores, replaces
# tests/data/fashion_pcnn.pfhm), then classifies N test images encrypted on W threads.
#   scripts/fashion_mnist.sh [--train] [N=500] [W=2]
set -euo pipefail
cd "$(dirname "$0")/.."
train=0
if [ "${1:-}" = "--train" ]; then train=1; shift; fi
bash scripts/build.sh --with-tooling
if [ $train = 1 ]; then
  /usr/bin/python3 tools/train_fashion_mnist.py build/fashion --epochs 5 --seed 1
  cp build/fashion/fashion_pcnn.pfhm build/fashion/fashion_pcnn.json tests/data/
fi
./build/bench/pfhe_fashion_mnist_bench "${1:-500}" "${2:-2}"
