#!/usr/bin/env bash
# `pfhe serve --executor fork` (issue 22): each job slot's inference process runs jobs on a
# fork pool. A two-tower graph's result equals `pfhe infer`'s byte for byte; a fork worker
# killed mid-job has its task run again and the job's result is unchanged; an inference
# process killed mid-job is replaced and the job run again, unchanged; a server killed
# with SIGKILL takes its inference processes (and their workers) with it.
#   service_fork.sh PFHE_BINARY
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/service_common.sh" "$1"
for i in 1 2 3 4 5 6; do
  "$pfhe" encrypt "${spec[@]}" --secret-key sk --image a.png --out in$i.cts 2> /dev/null
  "$pfhe" infer --params srv/params.pfhe --model srv/model.pfhc --eval-keys ek --input in$i.cts --out local$i.ct \
    2> /dev/null
done

"$pfhe" serve --params srv/params.pfhe --model srv/model.pfhc --state-dir state --port 0 --max-requests 1 \
  --executor fork --workers 2 --retries 1 2>> serve.log &
server_pid=$!
await_server
inference_pid=$(sed -n 's/.*inference processes ([^)]*): \([0-9]*\)$/\1/p' serve.log)
[ -n "$inference_pid" ] || fail "no inference process logged"
"$pfhe" client register --server "$url" --eval-keys ek > /dev/null
"$pfhe" client infer --server "$url" --input in1.cts --out served1.ct 2> /dev/null
cmp local1.ct served1.ct || fail "the fork pool's result differs from pfhe infer's"

# Kills the first child of process $1 that appears while job $2 runs; true when one was killed.
kill_child_during() {
  local parent=$1 job=$2 child
  for _ in $(seq 1 400); do
    child=$(pgrep -P "$parent" | head -n 1 || true)
    if [ -n "$child" ]; then kill -9 "$child" && return 0; fi
    "$pfhe" client status --server "$url" --job "$job" | grep -q '"state":"\(done\|failed\)"' && return 1
    sleep 0.02
  done
  return 1
}
# A fork worker killed mid-job: its task runs again on a new worker (input 2, or the next
# when a job ended before a worker could be caught).
killed=""
for i in 2 3 4; do
  job=$("$pfhe" client submit --server "$url" --input in$i.cts)
  if kill_child_during "$inference_pid" "$job"; then killed=$i; fi
  "$pfhe" client fetch --server "$url" --job "$job" --out served$i.ct 2> /dev/null || fail "job $i failed"
  cmp local$i.ct served$i.ct || fail "job $i's result differs"
  [ -z "$killed" ] || break
done
[ -n "$killed" ] || fail "no fork worker could be caught running"
grep -q "retrying it on a new worker" serve.log || fail "no retry noted for the killed worker"
echo "a fork worker killed during job $killed: its task ran again, the result equals pfhe infer's"

# The inference process itself killed mid-job: a new one runs the job again.
job=$("$pfhe" client submit --server "$url" --input in5.cts)
for _ in $(seq 1 200); do
  "$pfhe" client status --server "$url" --job "$job" | grep -q '"state":"running"' && break
  sleep 0.02
done
kill -9 "$inference_pid"
"$pfhe" client fetch --server "$url" --job "$job" --out served5.ct 2> /dev/null || fail "the job of the killed process failed"
cmp local5.ct served5.ct || fail "the re-run job's result differs"
grep -q "inference process $inference_pid killed by signal 9 during a job; starting another" serve.log ||
  fail "the replaced inference process was not logged"
echo "the inference process killed during a job: replaced, the job ran again with the same result"

# SIGKILL of the server: its inference processes go with it.
"$pfhe" client infer --server "$url" --input in6.cts --out served6.ct 2> /dev/null
cmp local6.ct served6.ct || fail "job on the new inference process"
children=$(pgrep -P "$server_pid" | tr '\n' ' ')
[ -n "$children" ] || fail "no inference process under the server"
kill -9 "$server_pid"
wait "$server_pid" 2> /dev/null || true
server_pid=""
sleep 1
# (gone, or a zombie left for an init that does not reap: not running)
running() { [ -e "/proc/$1/stat" ] && ! sed 's/^.*) //' "/proc/$1/stat" 2> /dev/null | grep -q '^Z'; }
for child in $children; do
  if running "$child"; then fail "inference process $child outlived the server"; fi
done
echo "service with fork pools: results byte-identical, killed workers and processes recovered"
