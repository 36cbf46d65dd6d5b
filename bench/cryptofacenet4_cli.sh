#!/usr/bin/env bash
# CryptoFaceNet4 end to end through the pfhe CLI, as docs/BENCHMARKS.md reports it:
# synthetic calibrated model, compile, keygen, encrypt one 64x64 face, then `pfhe bench`
# times the executor table on that input (sequential; threads W=2, 4; fork pool W=2, 4;
# fork workers that recompile their groups), each run in its own process with its peak
# RSS, outputs compared byte for byte; decrypt with the precision against float64.
# Needs ~24 GB of RAM and ~20 GB of disk; ~12 minutes on 2 cores.
#   bench/cryptofacenet4_cli.sh [WORK_DIR] [LANES] [COMPILE_FLAGS...]
# (default build/cfn4, 0 = as many as fit; e.g. --no-ring-switch for the one-ring A/B)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pfhe=$root/build/apps/pfhe
work=${1:-$root/build/cfn4}
lanes=${2:-0}
compile_flags=("${@:3}")
mkdir -p "$work" && cd "$work"
T() { /usr/bin/time -f "  [%C] wall %e s, peak RSS %M KB" "$@"; }
spec=(--spec srv/client.json --params srv/params.pfhe)
srv=(--params srv/params.pfhe --model srv/model.pfhc --eval-keys eval.keys)
T "$pfhe" make-model --kind cryptofacenet4 --out model.pfhm
T "$pfhe" sample-image --size 64 --seed 8 --out alice.png
T "$pfhe" compile --model model.pfhm --out-dir srv --lanes "$lanes" "${compile_flags[@]}"
T "$pfhe" keygen "${spec[@]}" --secret-key sk.key --eval-keys eval.keys
T "$pfhe" encrypt "${spec[@]}" --secret-key sk.key --image alice.png --out alice.cts
T "$pfhe" bench "${srv[@]}" --input alice.cts --model-file model.pfhm \
  --runs seq,threads:2,threads:4,fork:2,fork:4,recompile:2 --out-dir runs --json bench.json | tee bench.md
T "$pfhe" decrypt "${spec[@]}" --secret-key sk.key --input runs/run-0.ct --reference-model model.pfhm \
  --reference-image alice.png --json precision.json
