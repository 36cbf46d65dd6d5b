#!/usr/bin/env bash
# The two-tower-large graph on the fork pool with its evaluation keys read from the key
# file against mapped from a key cache (`pfhe expand-keys`), alternated with the
# one-thread sequential baseline (OMP_NUM_THREADS=1, the reference of the fork pool's
# speed-up) and threads, three rounds; prints each run's key loading, inference, branch
# times, whole-process time and peak RSS, and checks every output equals the sequential one.
# Needs ~16 GB of disk and ~8 GB of RAM; ~15 minutes on 2 cores.
#   bench/fork_key_cache_two_tower_large.sh [WORK_DIR]   (default build/two-tower-large)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
P=$root/build/apps/pfhe
work=${1:-$root/build/two-tower-large}
mkdir -p "$work" && cd "$work"
[ -f m.pfhm ] || "$P" make-model --kind two-tower-large --out m.pfhm 2> /dev/null
[ -f c/model.pfhc ] || "$P" compile --model m.pfhm --out-dir c 2> compile.log
[ -f ek ] || "$P" keygen --spec c/client.json --params c/params.pfhe --secret-key sk --eval-keys ek 2> /dev/null
[ -f ek.cache ] || "$P" expand-keys --spec c/client.json --params c/params.pfhe --eval-keys ek --out ek.cache
size=$(python3 -c 'import json; print(json.load(open("c/client.json"))["image"]["height"])')
if [ ! -f x.cts ]; then
  "$P" sample-image --size "$size" --seed 3 --out x.png 2> /dev/null
  "$P" encrypt --spec c/client.json --params c/params.pfhe --secret-key sk --image x.png --out x.cts 2> /dev/null
fi
run() {  # NAME KEYS EXECUTOR WORKERS [ENV...]
  env "${@:5}" /usr/bin/time -f "%e s %M KB" "$P" infer --params c/params.pfhe --model c/model.pfhc --eval-keys "$2" \
    --input x.cts --out "o.$1.ct" --executor "$3" --workers "$4" > r.log 2>&1
  echo "$1: $(grep -o 'evaluation keys [0-9.]* s' r.log) | $(grep -o '\(embedding\|logits\) in [0-9.]* s' r.log | head -1) |" \
    "$(grep -o 'branch [0-9] of [0-9] done in [0-9.]* s' r.log | tr '\n' ';') | $(tail -1 r.log)"
}
for round in 1 2 3; do
  echo "round $round"
  run seq ek.cache seq 1 OMP_NUM_THREADS=1
  run fork-file ek fork 2
  run fork-cache ek.cache fork 2
  run threads-cache ek.cache threads 2
done
for o in fork-file fork-cache threads-cache; do cmp o.seq.ct "o.$o.ct" || echo "$o differs from seq"; done
