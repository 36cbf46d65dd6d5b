#!/usr/bin/env bash
# The face-verification benchmark stages of docs/BENCHMARKS.md (issue 6): the seven
# executables of build/submission/ run in the harness's order on the single instance (one
# pair of synthetic 64x64 faces from pfhe_make_test_pairs), model CryptoFaceNet4
# (PFHE_SUBMISSION_KIND, default cryptofacenet4), each under /usr/bin/time; then the
# reports and the sizes of what crossed between client and server. ~6 minutes, ~22 GB of
# RAM, ~12 GB of disk on 2 cores.
#   bench/submission_stages.sh [WORK_DIR]   (default build/submission-bench)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
work=${1:-$build/submission-bench}
rm -rf "$work" && mkdir -p "$work" && cd "$work"
export PFHE_SUBMISSION_KIND=${PFHE_SUBMISSION_KIND:-cryptofacenet4}
export PFHE_SUBMISSION_REFERENCE=1  # stage 9 also scores the pairs in float64 (docs/SUBMISSION.md)
"$build/apps/pfhe_make_test_pairs" "$work" 0 64
mkdir -p io/single
for stage in "client_key_generation 0" server_preprocess_model "client_preprocess_input 0" \
             "client_encode_encrypt_input 0" "server_encrypted_compute 0" "client_decrypt_decode 0" \
             "client_postprocess 0"; do
  # shellcheck disable=SC2086
  /usr/bin/time -f "$stage: wall %e s, peak RSS %M KB" "$build/submission/"$stage
done
cat io/single/encrypted_model_predictions.txt io/single/server_reported.json io/single/submission_reported.json
python3 -c "import json; print(json.load(open('io/single/provenance.json'))['reference_check'])"
du -sh io/single/public_keys io/single/ciphertexts_upload io/single/ciphertexts_download io/server_data
