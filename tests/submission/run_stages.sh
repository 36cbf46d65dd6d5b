#!/usr/bin/env bash
# The benchmark submission's seven stages as separate processes, in the harness's order,
# from a fake benchmark root holding a fixture test_pairs.h5 (the "tiny" model keeps it
# fast; the stages are the same for CryptoFaceNet4). Checks: one finite, plausible score for
# the instance's pair, the reports, the server stages running with the client's directory
# moved away, and clear failures on missing, truncated or non-HDF5 inputs and bad sizes.
#   run_stages.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
cd "$root"
export PFHE_SUBMISSION_KIND=tiny
fail() { echo "FAIL: $*" >&2; exit 1; }
stage() { "$build/submission/$1" "${@:2}"; }
server_stage() {  # the client's secrets are out of reach while a server stage runs
  mv io/single/client client.hidden
  local status=0
  stage "$@" || status=$?
  mv client.hidden io/single/client
  return $status
}

"$build/apps/pfhe_make_test_pairs" "$root" 0 16
mkdir -p io/single
stage client_key_generation 0
[ -f io/single/client/secret.key ] || fail "no secret key"
server_stage server_preprocess_model
stage client_preprocess_input 0
stage client_encode_encrypt_input 0
server_stage server_encrypted_compute 0
stage client_decrypt_decode 0
stage client_postprocess 0
lines=$(wc -l < io/single/encrypted_model_predictions.txt)
[ "$lines" = 1 ] || fail "expected 1 score, found $lines"
score=$(cat io/single/encrypted_model_predictions.txt)
python3 -c "import math,sys; v=float('$score'); sys.exit(0 if math.isfinite(v) and -1.5 < v < 1.5 else 1)" \
  || fail "score $score is not a plausible cosine similarity"
for report in server_reported.json submission_reported.json provenance.json; do
  python3 -c "import json; json.load(open('io/single/$report'))" || fail "$report is not JSON"
done
grep -q "\"Encrypted computation\"" io/single/server_reported.json || fail "no timing report in the harness schema"

# Failures: a missing and a corrupt input file give a clear error, not a crash.
expect_error() {
  local pattern=$1; shift
  local status=0
  "$@" > out.txt 2>&1 || status=$?
  [ "$status" -ne 0 ] && [ "$status" -lt 128 ] || fail "expected a clean failure: $* (status $status)"
  grep -q -- "$pattern" out.txt || { cat out.txt; fail "message lacks '$pattern'"; }
}
mv datasets/single/intermediate/test_pairs.h5 pairs.h5
expect_error "no such file" stage client_preprocess_input 0
head -c 2000 pairs.h5 > datasets/single/intermediate/test_pairs.h5
expect_error "test_pairs.h5" stage client_preprocess_input 0
echo "garbage" > datasets/single/intermediate/test_pairs.h5
expect_error "not an HDF5 file" stage client_preprocess_input 0
expect_error "size must be" stage client_postprocess 7
rm io/single/ciphertexts_download/scores.cts
expect_error "scores.cts" stage client_decrypt_decode 0
echo "submission stages: all checks passed (score $score)"
