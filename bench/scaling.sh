#!/usr/bin/env bash
# The grid-scaling table of docs/BENCHMARKS.md: CryptoFaceNet4 / 9 / 16 and the 8x8 grid
# (2x2, 3x3, 4x4, 8x8 grids of 32x32 patches) through the CLI, `pfhe bench` with one and
# two thread workers (threads:1 = one core, threads:2), then tools/plot_scaling.py draws
# the latency and memory plot. Grids up to 4x4 are compiled once and served from the
# artefact; the 8x8 grid's artefact (~50 GB) would not fit, so it is served from the model
# file and every task compiles its lane group when it runs (`compile --plan-only`; the
# task times include compiling). Each grid's artefact and keys are deleted before the
# next one is built. ~55 minutes, ~24 GB of RAM and ~25 GB of disk on 2 cores; needs
# python3-matplotlib (scripts/install-deps.sh --with-tooling; Debian's /usr/bin/python3).
#   GRIDS="2 3 4 8" bench/scaling.sh [WORK_DIR] [PLOT_PNG]
#   (defaults: all four grids, build/scaling, WORK_DIR/scaling.png; the plot uses every
#   report in WORK_DIR, so grids can be run separately)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pfhe=$root/build/apps/pfhe
work=${1:-$root/build/scaling}
mkdir -p "$work" && cd "$work"
work=$(pwd)
plot=${2:-$work/scaling.png}
T() { /usr/bin/time -f "  [%C] wall %e s, peak RSS %M KB" "$@"; }
for grid in ${GRIDS:-2 3 4 8}; do
  kind=cryptofacenet$((grid * grid))
  mkdir -p "$kind" && cd "$kind"
  spec=(--spec srv/client.json --params srv/params.pfhe)
  T "$pfhe" make-model --kind "$kind" --out model.pfhm
  T "$pfhe" sample-image --size $((32 * grid)) --seed 8 --out face.png
  served=srv/model.pfhc
  if [ "$grid" -ge 8 ]; then
    T "$pfhe" compile --model model.pfhm --out-dir srv --plan-only
    served=model.pfhm
  else
    T "$pfhe" compile --model model.pfhm --out-dir srv
  fi
  T "$pfhe" keygen "${spec[@]}" --secret-key sk.key --eval-keys eval.keys
  T "$pfhe" encrypt "${spec[@]}" --secret-key sk.key --image face.png --out face.cts
  T "$pfhe" bench --params srv/params.pfhe --model "$served" --eval-keys eval.keys --input face.cts \
    --runs threads:1,threads:2 --json bench.json | tee bench.md
  rm -f srv/model.pfhc eval.keys
  cd "$work"
done
/usr/bin/python3 "$root/tools/plot_scaling.py" --out "$plot" cryptofacenet*/bench.json
