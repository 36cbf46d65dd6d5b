#!/usr/bin/env bash
# The benchmark submission's seven stages as separate processes, in the harness's order,
# from a fake benchmark root holding a fixture test_pairs.h5 (the "tiny" model keeps it
# fast; the stages are the same for CryptoFaceNet4). Checks, stage by stage, what the
# harness reads (docs/SUBMISSION.md, harness revisions 354989b, 4f11228 and 98cb374): the
# keys in public_keys/, the packed model in io/server_data/ (stage 3 takes no size and
# compiles once, whatever instances an earlier run left), submission_reported.json after
# stage 3, the upload and download directories, one finite plausible score, the reports;
# stage 5 on the .npz pair store gives the same prepared inputs as on the .h5 one; stages 6
# and 7 report their progress on stderr; the server stages run with the client's directory
# moved away; clear failures on missing, truncated, non-HDF5 and non-zip inputs and bad sizes.
#   run_stages.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
cd "$root"
export PFHE_SUBMISSION_KIND=tiny PFHE_SUBMISSION_REFERENCE=1
fail() { echo "FAIL: $*" >&2; exit 1; }
stage() { "$build/submission/$1" "${@:2}"; }
server_stage() {  # the client's secrets are out of reach while a server stage runs
  mv io/single/client client.hidden
  local status=0
  stage "$@" || status=$?
  mv client.hidden io/single/client
  return $status
}

json_has() {  # json_has FILE PYTHON-EXPRESSION-ON-j
  python3 -c "import json,sys; j=json.load(open('$1')); sys.exit(0 if ($2) else 1)" || fail "$1: not ($2)"
}
"$build/apps/pfhe_make_test_pairs" "$root" 0 16
mkdir -p io/single io/small/public_keys  # io/small: an instance an earlier run left
stage client_key_generation 0
[ -f io/single/client/secret.key ] || fail "no secret key"
for f in params.pfhe client.json eval.keys; do [ -s io/single/public_keys/$f ] || fail "no public_keys/$f"; done
server_stage server_preprocess_model
[ -s io/server_data/model.pfhc ] || fail "stage 3 wrote no packed model to io/server_data/"
[ "$(find io/server_data -type f | wc -l)" = 1 ] || fail "io/server_data/ holds more than the packed model: $(ls -R io/server_data)"
# 98cb374's harness sums the regular files under io/server_data and refuses symbolic links.
[ -z "$(find io/server_data ! -type f ! -type d)" ] || fail "io/server_data/ holds a link or special file: $(ls -lR io/server_data)"
[ -z "$(find io -name '*.pfhc' -not -path 'io/server_data/*')" ] || fail "a packed model outside io/server_data/"
json_has io/single/submission_reported.json "j['Bandwidth']['packed_model'] > 0 and j['Bandwidth']['evaluation_keys'] > 0"
stage client_preprocess_input 0
[ -s io/single/client/inputs.bin ] || fail "no prepared inputs"
# The older harness's .npz store (decoded pixels) prepares the same inputs as the .h5 one.
mv io/single/client/inputs.bin inputs.h5.bin
mv datasets/single/intermediate/test_pairs.h5 pairs.h5
"$build/apps/pfhe_make_test_pairs" "$root" 0 16 npz
stage client_preprocess_input 0
cmp io/single/client/inputs.bin inputs.h5.bin || fail "the .npz store prepared other inputs than the .h5 one"
python3 -c "import zipfile; assert zipfile.ZipFile('datasets/single/intermediate/test_pairs.npz').namelist() == ['pair_00000_img0.npy', 'pair_00000_img1.npy']" \
  || fail "the fixture .npz does not have the harness's member names"
# 128 pairs (instance size 1), read one pair at a time from either store: the same inputs.
mkdir -p io/small/client && cp io/single/public_keys/client.json io/small/public_keys/
for format in h5 npz; do
  "$build/apps/pfhe_make_test_pairs" "$root" 1 16 $format
  stage client_preprocess_input 1
  mv io/small/client/inputs.bin inputs.small.$format.bin
  rm datasets/small/intermediate/test_pairs.$format
done
cmp inputs.small.h5.bin inputs.small.npz.bin || fail "128 pairs: the .npz store prepared other inputs than the .h5 one"
# u64 count, the images, the 16-byte checksum trailer (the single instance's file: 2 images)
image_bytes=$(( ($(stat -c %s inputs.h5.bin) - 24) / 2 ))
[ "$(stat -c %s inputs.small.h5.bin)" = $((8 + 256 * image_bytes + 16)) ] || fail "128 pairs: wrong prepared size"
# With both stores present, the newer one is read: a damaged older .h5 is not touched.
echo "stale" > datasets/single/intermediate/test_pairs.h5
touch -d "1 hour ago" datasets/single/intermediate/test_pairs.h5
stage client_preprocess_input 0
mv pairs.h5 datasets/single/intermediate/test_pairs.h5
rm datasets/single/intermediate/test_pairs.npz
stage client_encode_encrypt_input 0 2> stage6.err || { cat stage6.err; fail "stage 6 failed"; }
grep -q "^client_encode_encrypt_input: 2/2 images encrypted, " stage6.err || { cat stage6.err; fail "stage 6 reported no progress"; }
server_stage server_encrypted_compute 0 2> stage7.err || { cat stage7.err; fail "stage 7 failed"; }
grep -q "^server_encrypted_compute: 1/1 pairs scored, .* s per pair$" stage7.err || { cat stage7.err; fail "stage 7 reported no progress"; }
# On one core there are as many pairs as cores: both images of the pair run as one batch
# (each layer's diagonals encoded once for the two); the scores are the same bytes.
cp io/single/ciphertexts_download/scores.cts scores.cores.cts
mv io/single/client client.hidden
taskset -c 0 "$build/submission/server_encrypted_compute" 0
mv client.hidden io/single/client
cmp io/single/ciphertexts_download/scores.cts scores.cores.cts || fail "a pair run as one batch gave other scores"
json_has io/single/server_reported.json "j['additional_measurements']['Images in flight'] == 2"
stage client_decrypt_decode 0
stage client_postprocess 0
lines=$(wc -l < io/single/encrypted_model_predictions.txt)
[ "$lines" = 1 ] || fail "expected 1 score, found $lines"
score=$(cat io/single/encrypted_model_predictions.txt)
python3 -c "import math,sys; v=float('$score'); sys.exit(0 if math.isfinite(v) and -1.5 < v < 1.5 else 1)" \
  || fail "score $score is not a plausible cosine similarity"
for d in ciphertexts_upload ciphertexts_download; do [ -n "$(ls io/single/$d)" ] || fail "empty io/single/$d"; done
for report in server_reported.json submission_reported.json provenance.json; do
  python3 -c "import json; json.load(open('io/single/$report'))" || fail "$report is not JSON"
done
[ "$(wc -l < io/single/client/reference_scores.txt)" = 1 ] || fail "no float64 reference score"
json_has io/single/provenance.json "j['reference_check']['max_abs_score_error_vs_float64'] < 1e-5"
json_has io/single/server_reported.json "isinstance(j['Encrypted computation'], float) and isinstance(j['Total'], float)"
json_has io/single/server_reported.json \
  "j['additional_measurements']['Encrypted computation per pair'] == j['Encrypted computation'] and \
   1 <= j['additional_measurements']['Images in flight'] <= 2"
json_has io/single/submission_reported.json \
  "all(isinstance(v, int) and v > 0 for v in j['Bandwidth'].values()) and sorted(j['Bandwidth']) == \
   ['encrypted_inputs', 'encrypted_scores', 'evaluation_keys', 'packed_model', 'public_parameters']"

# Failures: a missing and a corrupt input file give a clear error, not a crash.
expect_error() {
  local pattern=$1; shift
  local status=0
  "$@" > out.txt 2>&1 || status=$?
  [ "$status" -ne 0 ] && [ "$status" -lt 128 ] || fail "expected a clean failure: $* (status $status)"
  grep -q -- "$pattern" out.txt || { cat out.txt; fail "message lacks '$pattern'"; }
}
mv datasets/single/intermediate/test_pairs.h5 pairs.h5
expect_error "no test_pairs.h5 or test_pairs.npz" stage client_preprocess_input 0
head -c 2000 pairs.h5 > datasets/single/intermediate/test_pairs.h5
expect_error "test_pairs.h5" stage client_preprocess_input 0
echo "garbage" > datasets/single/intermediate/test_pairs.h5
expect_error "not an HDF5 file" stage client_preprocess_input 0
rm datasets/single/intermediate/test_pairs.h5
echo "garbage" > datasets/single/intermediate/test_pairs.npz
expect_error "not a zip (.npz) archive" stage client_preprocess_input 0
python3 -c "import zipfile; zipfile.ZipFile('datasets/single/intermediate/test_pairs.npz', 'w').writestr('pair_00000_img0.npy', b'')"
expect_error "pair 0 lacks one of its images" stage client_preprocess_input 0
expect_error "usage" stage server_preprocess_model 0 1
expect_error "size must be" stage client_postprocess 7
rm io/single/ciphertexts_download/scores.cts
expect_error "scores.cts" stage client_decrypt_decode 0
echo "submission stages: all checks passed (score $score)"
