#!/usr/bin/env bash
# Runs a test program with PFHE_SIMD=PATH, for a SIMD path that the CPU has but does not
# take by default (the suite's own run already covers the default path); exits 77, which
# CTest counts as skipped, otherwise.
#   on_simd_path.sh avx2 PROGRAM [ARGS...]
set -euo pipefail
path=$1
shift
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() { [[ $flags == *" $1 "* ]]; }
case $path in
  avx2)
    if ! has avx2 || ! has fma; then echo "skipped: this CPU has no AVX2 with FMA"; exit 77; fi
    if ! has avx512ifma; then echo "skipped: AVX2 is this CPU's default path, which the suite ran"; exit 77; fi ;;
  *) echo "on_simd_path.sh: unknown path '$path' (avx2)" >&2; exit 2 ;;
esac
PFHE_SIMD=$path exec "$@"
