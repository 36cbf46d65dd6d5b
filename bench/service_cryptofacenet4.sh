#!/usr/bin/env bash
# CryptoFaceNet4 behind `pfhe serve` (issue 22's amortised-cost figure): the bare compute
# of one image (`pfhe infer --executor EXECUTOR --workers 2`, loading excluded) against the
# service under steady load: N encrypted faces submitted at once, one job at a time on
# two workers, the model and the key set loaded once. Prints the bare compute, the
# service's wall time from the first submission to the last result per image (amortised),
# the service's own compute per job (metrics), its start and key-registration times and
# peak RSS; checks the first result equals `pfhe infer`'s bytes. Then restarts the server
# with the key set registered and sends one more face: how soon it is ready, how long the
# job's key set took to map from its key cache, and that job's compute.
# EXECUTOR (threads, fork or mpi) runs both the bare inference and the service's jobs (mpi:
# the bare run under mpirun with rank 0 and two worker ranks, the service's MPI jobs alike).
# Needs ~20 GB of RAM and ~25 GB of disk; ~12 minutes on 2 cores with N = 4.
#   bench/service_cryptofacenet4.sh [WORK_DIR] [N] [EXECUTOR]   (default build/cfn4-service, 4, threads)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pfhe=$root/build/apps/pfhe
work=${1:-$root/build/cfn4-service}
count=${2:-4}
executor=${3:-threads}
bare_launcher=()
if [ "$executor" = mpi ]; then
  bare_launcher=(mpirun -np 3 --oversubscribe)
  [ "$(id -u)" != 0 ] || bare_launcher+=(--allow-run-as-root)
fi
mkdir -p "$work" && cd "$work"
spec=(--spec srv/client.json --params srv/params.pfhe)
[ -f model.pfhm ] || "$pfhe" make-model --kind cryptofacenet4 --out model.pfhm
[ -f srv/model.pfhc ] || "$pfhe" compile --model model.pfhm --out-dir srv
[ -f eval.keys ] || "$pfhe" keygen "${spec[@]}" --secret-key sk.key --eval-keys eval.keys
for i in $(seq 1 "$count"); do
  "$pfhe" sample-image --size 64 --seed "$((20 + i))" --out face$i.png 2> /dev/null
  "$pfhe" encrypt "${spec[@]}" --secret-key sk.key --image face$i.png --out face$i.cts 2> /dev/null
done
# MPI ranks each load the keys they are given: from a key cache they map the same pages,
# from the key file each would expand its own copy (3 x 9.6 GB: more than the machine has).
bare_keys=eval.keys
if [ "$executor" = mpi ]; then
  [ -f eval.cache ] || "$pfhe" expand-keys "${spec[@]}" --eval-keys eval.keys --out eval.cache
  bare_keys=eval.cache
fi
"${bare_launcher[@]}" "$pfhe" infer --params srv/params.pfhe --model srv/model.pfhc --eval-keys "$bare_keys" \
  --input face1.cts --out bare.ct --executor "$executor" --workers 2 --json bare.json
rm -rf state
start=$(date +%s.%N)
"$pfhe" serve --params srv/params.pfhe --model srv/model.pfhc --state-dir state --port 0 --max-requests 1 \
  --workers 2 --executor "$executor" 2> serve.log &
server=$!
trap 'kill $server 2> /dev/null || true' EXIT
for _ in $(seq 1 600); do [ -s state/port ] && break; sleep 0.2; done
ready=$(date +%s.%N)
url="http://127.0.0.1:$(cat state/port)"
"$pfhe" client register --server "$url" --eval-keys eval.keys
registered=$(date +%s.%N)
for i in $(seq 1 "$count"); do "$pfhe" client submit --server "$url" --input face$i.cts > job$i; done
for i in $(seq 1 "$count"); do "$pfhe" client fetch --server "$url" --job "$(cat job$i)" --out served$i.ct 2> /dev/null; done
done_at=$(date +%s.%N)
cmp bare.ct served1.ct || { echo "the served result differs from pfhe infer's"; exit 1; }
"$pfhe" client metrics --server "$url" > metrics.json
kill -TERM $server
wait $server || true
rm -f state/port
restart=$(date +%s.%N)
"$pfhe" serve --params srv/params.pfhe --model srv/model.pfhc --state-dir state --port 0 --max-requests 1 \
  --workers 2 --executor "$executor" 2>> serve.log &
server=$!
for _ in $(seq 1 600); do [ -s state/port ] && break; sleep 0.05; done
ready_again=$(date +%s.%N)
url="http://127.0.0.1:$(cat state/port)"
"$pfhe" encrypt "${spec[@]}" --secret-key sk.key --image face1.png --out again.cts 2> /dev/null
again_start=$(date +%s.%N)
"$pfhe" client infer --server "$url" --input again.cts --out again.ct 2> /dev/null
again_done=$(date +%s.%N)
"$pfhe" client metrics --server "$url" > metrics_again.json
python3 - "$start" "$ready" "$registered" "$done_at" "$count" "$restart" "$ready_again" "$again_start" "$again_done" <<'EOF'
import json, sys
start, ready, registered, done_at = map(float, sys.argv[1:5])
count = int(sys.argv[5])
restart, ready_again, again_start, again_done = map(float, sys.argv[6:10])
bare = json.load(open("bare.json"))["infer_seconds"]
m = json.load(open("metrics.json"))
served = (done_at - registered) / count
print(f"bare compute {bare:.1f} s per image; service: ready {ready - start:.1f} s after start, keys registered "
      f"in {registered - ready:.1f} s, {count} images in {done_at - registered:.1f} s = {served:.1f} s per image "
      f"({100 * (served / bare - 1):+.1f} % against bare compute), the service's own compute "
      f"{m['stage_seconds']['infer'] / count:.1f} s per job; peak RSS {m['peak_rss_gb']:.2f} GB")
a = json.load(open("metrics_again.json"))
print(f"after a restart: ready {ready_again - restart:.1f} s after start; a new face's result "
      f"{again_done - again_start:.1f} s after its submission, of which its key set mapped from the key cache "
      f"{a['key_load_seconds']:.1f} s and its compute {a['stage_seconds']['infer']:.1f} s")
EOF
