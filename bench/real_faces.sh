#!/usr/bin/env bash
# Issue 3's acceptance check at full size, as docs/BENCHMARKS.md reports it: CryptoFaceNet4
# with synthetic weights whose BatchNorm statistics are calibrated on 80 real faces
# (Labeled Faces in the Wild crops shipped by Debian's python3-skimage, tools/lfw_faces.py),
# then held-out real faces encrypted at N = 2^16 (128-bit): each face's encrypted embedding
# against float64, and every pair matched encrypted against the float64 decision.
# Needs ~16 GB of RAM; ~1 minute per face on 2 cores.
#   bench/real_faces.sh [WORK_DIR] [FACES]   (default build/real_faces, 6 faces)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$root/build/real_faces}
faces=${2:-6}
bash "$root/scripts/build.sh" --with-tooling  # python3-skimage holds the faces
mkdir -p "$work" && cd "$work"
/usr/bin/python3 "$root/tools/lfw_faces.py" lfw
/usr/bin/time -f "  [make-model] wall %e s, peak RSS %M KB" \
  "$root/build/apps/pfhe" make-model --kind cryptofacenet4 --calibrate-on lfw/calibration --out model.pfhm
/usr/bin/time -f "  [real faces] wall %e s, peak RSS %M KB" \
  "$root/build/bench/pfhe_real_faces_bench" model.pfhm lfw/held_out "$faces" 2
