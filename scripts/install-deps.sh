#!/usr/bin/env bash
# Installs the Debian 12 packages pfhe needs (only those missing). Runs as root or via sudo.
#   install-deps.sh [--with-tooling]   also python3-torch, python3-onnx, python3-pytest, python3-matplotlib, python3-skimage (LFW faces) and the Fashion-MNIST data (Debian),
#                                      for tools/ and the tests that use them
set -euo pipefail
packages=(g++ cmake ninja-build pkg-config libssl-dev libzstd-dev libxxhash-dev libomp-dev
          libgtest-dev libbenchmark-dev nlohmann-json3-dev libfmt-dev libcli11-dev
          libopenmpi-dev openmpi-bin libstb-dev zlib1g-dev libhdf5-dev libzip-dev libxtensor-dev libonnx-dev
          libcpp-httplib-dev pybind11-dev python3-dev python3-numpy)
if [ "${1:-}" = "--with-tooling" ]; then
  packages+=(python3-torch python3-onnx python3-pytest python3-xxhash python3-matplotlib python3-skimage dataset-fashion-mnist)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "pfhe: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
