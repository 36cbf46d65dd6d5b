#!/usr/bin/env bash
# synthetic model -> CryptoFace-style PyTorch checkpoint -> tools/export_cryptoface.py ->
# pfhe model: both pfhe models must compute identical embeddings.
set -euo pipefail
model_tool=$1
repo=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$model_tool" make "$work/original.pfhm"
l2=$(/usr/bin/python3 "$repo/tests/tools/pfhm_to_checkpoint.py" "$work/original.pfhm" "$work/model.ckpt")
/usr/bin/python3 "$repo/tools/export_cryptoface.py" "$work/model.ckpt" "$work/exported.pfhm" --patch-size 8 --l2 $l2
"$model_tool" compare "$work/original.pfhm" "$work/exported.pfhm"
# A checkpoint without the L2 polynomial is refused with a message, not a guess.
if /usr/bin/python3 "$repo/tools/export_cryptoface.py" "$work/model.ckpt" "$work/x.pfhm" 2> "$work/err"; then
  echo "export without --l2 should fail"; exit 1
fi
grep -q "pass --l2" "$work/err"
