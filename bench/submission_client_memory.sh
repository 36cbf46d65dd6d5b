#!/usr/bin/env bash
# Peak memory of the submission's client stages 5 and 6 (prepare and encrypt the pairs'
# images) against the instance size, for one build's stage executables: a fixture pair
# store of SIZE (0..3) with 250 x 250 faces (the LFW crops' size) in FORMAT, keys made once
# per work directory (CryptoFaceNet4, PFHE_SUBMISSION_KIND), then each stage under
# /usr/bin/time. Run it with two builds on the same work directory to compare them.
#   bench/submission_client_memory.sh BUILD_DIR WORK_DIR SIZE [h5|npz]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$1" && pwd)
work=$2
size=$3
format=${4:-h5}
export PFHE_SUBMISSION_KIND=${PFHE_SUBMISSION_KIND:-cryptofacenet4}
mkdir -p "$work" && cd "$work"
instance=$(case $size in 0) echo single;; 1) echo small;; 2) echo medium;; 3) echo large;; esac)
store=datasets/$instance/intermediate/test_pairs.$format
[ -f "$store" ] || "$root/build/apps/pfhe_make_test_pairs" "$work" "$size" 250 "$format"
[ -f "io/$instance/client/secret.key" ] || "$build/submission/client_key_generation" "$size" 2> /dev/null
echo "$(basename "$build"), size $size ($(du -h "$store" | cut -f1) $format store):"
for stage in client_preprocess_input client_encode_encrypt_input; do
  /usr/bin/time -f "  $stage: wall %e s, peak RSS %M KB" "$build/submission/$stage" "$size"
done
