#!/usr/bin/env bash
# Real faces through an encrypted PatchCNN (CI size): Labeled Faces in the Wild crops from
# Debian's python3-skimage (tools/lfw_faces.py), a synthetic "reduced" PatchCNN (every
# CryptoFace layer type) calibrated on 80 of them with `pfhe make-model --calibrate-on`,
# then four held-out faces encrypted at 128-bit secure parameters; the benchmark program
# exits non-zero unless every embedding is within a relative 1e-3 of float64 and every
# encrypted match decision over the six pairs equals the float64 one.
#   real_faces.sh PFHE_BINARY REAL_FACES_BENCH REPO
set -euo pipefail
pfhe=$1
bench=$2
repo=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 "$repo/tools/lfw_faces.py" "$work/lfw"
"$pfhe" make-model --kind reduced --calibrate-on "$work/lfw/calibration" --out "$work/model.pfhm"
"$bench" "$work/model.pfhm" "$work/lfw/held_out" 4 2
echo "real faces: all checks passed"
