#!/usr/bin/env bash
# Issue 22's load test on CryptoFaceNet4: 4 clients with their own key sets send 6
# encrypted faces each, all clients at once (24 jobs), to one `pfhe serve` (one job at a
# time on 2 workers of EXECUTOR, --max-loaded-keys 2: the key sets evict each other's
# mappings). Every result is compared with the bytes `pfhe infer` gives for the same input
# and key set (run afterwards, one at a time, on the server's key cache). Prints p50/p95
# latency, throughput, the jobs' compute, key-set loads and the server's peak RSS.
# Disk: each client's key file (4.5 GB) is removed once registered (the server keeps its
# 9.7 GB cache): ~45 GB in all. ~45 minutes on 2 cores.
#   bench/service_load_cryptofacenet4.sh WORK_DIR COMPILED_DIR [EXECUTOR]
# COMPILED_DIR: `pfhe compile`'s output for a CryptoFaceNet4 model file (params.pfhe,
# model.pfhc, client.json).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pfhe=$root/build/apps/pfhe
work=$1
srv=$(cd "$2" && pwd)
executor=${3:-threads}
clients=4
per_client=6
mkdir -p "$work" && cd "$work"
spec=(--spec "$srv/client.json" --params "$srv/params.pfhe")
rm -rf state
"$pfhe" serve --params "$srv/params.pfhe" --model "$srv/model.pfhc" --state-dir state --port 0 --max-requests 1 \
  --workers 2 --executor "$executor" --max-loaded-keys 2 2> serve.log &
server=$!
trap 'kill $server 2> /dev/null || true' EXIT
for _ in $(seq 1 600); do [ -s state/port ] && break; sleep 0.2; done
url="http://127.0.0.1:$(cat state/port)"
metric() { "$pfhe" client metrics --server "$url" | sed "s/.*\"$1\":\\([0-9.e+-]*\\).*/\\1/"; }
for c in $(seq 1 $clients); do
  [ -f sk$c ] || "$pfhe" keygen "${spec[@]}" --secret-key sk$c --eval-keys ek$c 2> /dev/null
  if [ -f ek$c ]; then
    "$pfhe" client register --server "$url" --eval-keys ek$c | sed -n 's/registered key set //p' > tag$c
    rm ek$c
  fi
  for i in $(seq 1 $per_client); do
    [ -f in.$c.$i.cts ] && continue
    "$pfhe" sample-image --size 64 --seed "$((100 * c + i))" --out face.$c.$i.png 2> /dev/null
    "$pfhe" encrypt "${spec[@]}" --secret-key sk$c --image face.$c.$i.png --out in.$c.$i.cts 2> /dev/null
  done
done
echo "4 key sets registered: $(metric key_sets) in the server; peak RSS so far $(metric peak_rss_gb) GB"

source "$root/tests/cli/load_clients.sh"
rm -f latency.ms
start=$(date +%s%N)
run_clients $clients 1 $per_client || { echo "a client's request failed"; exit 1; }
wall_ms=$((($(date +%s%N) - start) / 1000000))
"$pfhe" client metrics --server "$url" > metrics.json
kill -TERM $server
wait $server || true

for c in $(seq 1 $clients); do
  cache=state/keys/$(cat tag$c).cache
  for i in $(seq 1 $per_client); do
    "$pfhe" infer --params "$srv/params.pfhe" --model "$srv/model.pfhc" --eval-keys "$cache" --input in.$c.$i.cts \
      --out want.$c.$i.ct --executor threads --workers 2 --json bare.$c.$i.json 2> /dev/null
    cmp want.$c.$i.ct got.$c.$i.ct || { echo "client $c face $i differs from pfhe infer's"; exit 1; }
  done
done
/usr/bin/python3 - "$wall_ms" <<'PY'
import glob, json, statistics, sys
lat = sorted(int(line) / 1000 for line in open("latency.ms"))
m = json.load(open("metrics.json"))
bare = [json.load(open(f))["infer_seconds"] for f in glob.glob("bare.*.json")]
peak_bare = max(json.load(open(f))["peak_rss_gb"] for f in glob.glob("bare.*.json"))
wall = int(sys.argv[1]) / 1000
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(f"{len(lat)} jobs of 4 clients in {wall:.1f} s: {len(lat) / wall * 3600:.0f} jobs/h, {wall / len(lat):.1f} s per job; "
      f"latency p50 {pick(0.5):.1f} s, p95 {pick(0.95):.1f} s; every result equals pfhe infer's bytes")
print(f"server: jobs done {m['jobs_done']}, failed {m['jobs_failed']}, stage seconds {m['stage_seconds']}, "
      f"key-set loads {m['key_set_loads']} ({m['key_load_seconds']:.1f} s), peak RSS {m['peak_rss_gb']:.2f} GB")
print(f"bare pfhe infer (threads, 2 workers): mean {statistics.mean(bare):.1f} s, "
      f"range {min(bare):.1f}-{max(bare):.1f} s, peak RSS {peak_bare:.2f} GB")
PY
