#!/usr/bin/env bash
# The encrypted demo: installs dependencies, builds, then runs the client/server flow of
# encrypted face verification with the pfhe CLI on a PatchCNN with every CryptoFace layer
# type (2x2 patches, five HerPN blocks, depth 28) at 128-bit secure parameters (N = 2^16):
# the server compiles the model, the client makes keys and encrypts faces, the server
# computes encrypted embeddings and encrypted match scores, the client decrypts.
#   scripts/demo.sh [--model reduced|tiny|cryptofacenet4] [--workers W]
# Files go to build/demo/. Timings, precision and decisions are printed as they come.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=reduced
workers=2
while [ $# -gt 0 ]; do
  case $1 in
    --model) kind=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    *) echo "usage: scripts/demo.sh [--model reduced|tiny|cryptofacenet4] [--workers W]" >&2; exit 2 ;;
  esac
done
bash scripts/build.sh
pfhe=$PWD/build/apps/pfhe
demo=build/demo
rm -rf "$demo" && mkdir -p "$demo" && cd "$demo"
side=16
[ "$kind" = cryptofacenet4 ] && side=64
step() { echo; echo "== $*"; }
start=$(date +%s)

step "server: the model (synthetic weights, BatchNorm statistics calibrated on 128 images)"
"$pfhe" make-model --kind "$kind" --out model.pfhm
step "client: three face images (alice, alice in another photo, bob)"
"$pfhe" sample-image --size $side --seed 8 --out alice.png
"$pfhe" sample-image --size $side --seed 8 --variation 0.05 --out alice2.png
"$pfhe" sample-image --size $side --seed 14 --out bob.png
step "server: compile once (parameters from the depth, packing, diagonals, rotation-key set)"
"$pfhe" compile --model model.pfhm --out-dir server --budget-gb 0.5
spec=(--spec server/client.json --params server/params.pfhe)
srv=(--params server/params.pfhe --model server/model.pfhc --eval-keys eval.keys)
step "client: keys (the secret key stays here; the evaluation keys go to the server)"
"$pfhe" keygen "${spec[@]}" --secret-key secret.key --eval-keys eval.keys
for face in alice alice2 bob; do
  step "$face: client encrypts, server infers on $workers forked workers (never sees the secret key)"
  "$pfhe" encrypt "${spec[@]}" --secret-key secret.key --image $face.png --out $face.cts
  "$pfhe" infer "${srv[@]}" --input $face.cts --out $face.ct --executor fork --workers "$workers"
done
step "client: decrypt alice's embedding, precision against the float64 model"
"$pfhe" decrypt "${spec[@]}" --secret-key secret.key --input alice.ct --reference-model model.pfhm --reference-image alice.png
step "server: enroll alice's encrypted embedding; match the two probes encrypted"
"$pfhe" enroll --params server/params.pfhe --spec server/client.json --store templates --name alice --embedding alice.ct
for probe in alice2 bob; do
  "$pfhe" match "${srv[@]}" --input $probe.ct --out $probe.score --store templates --name alice --threshold 0.5
  echo -n "client decrypts the score of $probe vs alice: "
  "$pfhe" decrypt "${spec[@]}" --secret-key secret.key --input $probe.score --score
done
echo
echo "demo finished in $(( $(date +%s) - start )) s (files in $demo)"
