#!/usr/bin/env bash
# tools/train_resnet20_fashion.py's graph export -> pfhe's graph loader: the float64 forward
# of the loaded graph equals torch's logits (float32 weights in both, relative 1e-9).
set -euo pipefail
model_tool=$1
repo=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 "$repo/tests/tools/resnet20_export_check.py" "$repo" "$work"
"$model_tool" graph-logits "$work/resnet20.pfhm" "$work/input.f64" > "$work/got.txt"
paste "$work/got.txt" "$work/expected.txt" | awk '
  { d = $1 - $2; if (d < 0) d = -d; m = $2 < 0 ? -$2 : $2; if (m < 1) m = 1; if (d / m > 1e-9) bad = 1; n++ }
  END { if (n != 10 || bad) { print "graph logits differ from torch (" n " values)"; exit 1 } print "10 logits equal" }'
