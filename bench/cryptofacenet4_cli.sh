#!/usr/bin/env bash
# CryptoFaceNet4 end to end through the pfhe CLI, as docs/BENCHMARKS.md reports it:
# synthetic calibrated model, compile, keygen, encrypt one 64x64 face, encrypted inference
# with the fork pool (W=2), the thread pool (W=2) and sequentially, decrypt with the
# precision against float64. Needs ~24 GB of RAM and ~20 GB of disk; ~8 minutes on 2 cores.
#   bench/cryptofacenet4_cli.sh [WORK_DIR]   (default build/cfn4)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pfhe=$root/build/apps/pfhe
work=${1:-$root/build/cfn4}
mkdir -p "$work" && cd "$work"
T() { /usr/bin/time -f "  [%C] wall %e s, peak RSS %M KB" "$@"; }
spec=(--spec srv/client.json --params srv/params.pfhe)
srv=(--params srv/params.pfhe --model srv/model.pfhc --eval-keys eval.keys --input alice.cts --out alice.ct)
T "$pfhe" make-model --kind cryptofacenet4 --out model.pfhm
T "$pfhe" sample-image --size 64 --seed 8 --out alice.png
T "$pfhe" compile --model model.pfhm --out-dir srv --budget-gb 1
T "$pfhe" keygen "${spec[@]}" --secret-key sk.key --eval-keys eval.keys
T "$pfhe" encrypt "${spec[@]}" --secret-key sk.key --image alice.png --out alice.cts
for ex in "fork --workers 2" "threads --workers 2" "seq"; do
  # shellcheck disable=SC2086
  T "$pfhe" infer "${srv[@]}" --executor $ex --json "report-${ex%% *}.json"
done
T "$pfhe" decrypt "${spec[@]}" --secret-key sk.key --input alice.ct --reference-model model.pfhm \
  --reference-image alice.png --json precision.json
