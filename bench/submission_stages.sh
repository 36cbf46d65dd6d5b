#!/usr/bin/env bash
# The face-verification benchmark stages of docs/BENCHMARKS.md (issues 6 and 23): the seven
# executables of build/submission/ run in the harness's order on one instance of synthetic
# 64x64 faces from pfhe_make_test_pairs (SIZE 0: one pair, 1: 128 pairs, 2: 256, 3: 1,024),
# model CryptoFaceNet4 (PFHE_SUBMISSION_KIND, default cryptofacenet4), each under
# /usr/bin/time; then the reports and the sizes of what crossed between client and server.
# Size 0: ~6 minutes, ~14 GB of RAM, ~12 GB of disk on 2 cores; size 1: stage 7 alone is
# 128 pairs at 30-40 s each (over an hour) and the ciphertexts take ~15 GB of disk.
#   bench/submission_stages.sh [WORK_DIR [SIZE]]   (default build/submission-bench 0)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
work=${1:-$build/submission-bench}
size=${2:-0}
instances=(single small medium large)
[[ $size =~ ^[0-3]$ ]] || { echo "submission_stages.sh: SIZE must be 0, 1, 2 or 3, not '$size'" >&2; exit 2; }
instance=${instances[$size]}
rm -rf "$work" && mkdir -p "$work" && cd "$work"
export PFHE_SUBMISSION_KIND=${PFHE_SUBMISSION_KIND:-cryptofacenet4}
export PFHE_SUBMISSION_REFERENCE=1  # stage 9 also scores the pairs in float64 (docs/SUBMISSION.md)
"$build/apps/pfhe_make_test_pairs" "$work" "$size" 64
mkdir -p "io/$instance"
for stage in "client_key_generation $size" server_preprocess_model "client_preprocess_input $size" \
             "client_encode_encrypt_input $size" "server_encrypted_compute $size" \
             "client_decrypt_decode $size" "client_postprocess $size"; do
  # shellcheck disable=SC2086
  /usr/bin/time -f "$stage: wall %e s, peak RSS %M KB" "$build/submission/"$stage
done
io=io/$instance
head -n 4 "$io/encrypted_model_predictions.txt"
cat "$io/server_reported.json" "$io/submission_reported.json"
python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['reference_check'])" "$io/provenance.json"
du -sh "$io/public_keys" "$io/ciphertexts_upload" "$io/ciphertexts_download" io/server_data
