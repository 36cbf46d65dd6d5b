#!/usr/bin/env bash
# `pfhe serve --executor mpi` (issue 22): each job slot's MPI job (mpirun, rank 0 and two
# worker ranks) runs the jobs. A two-tower graph's result equals `pfhe infer`'s byte for
# byte, also for a second key set; a worker rank killed mid-job ends its MPI job, and the
# server starts another and runs the job again with the same result; --retries and a
# launcher that does not exist are refused with their reason; a server killed with SIGKILL
# leaves no rank running.
#   service_mpi.sh PFHE_BINARY
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/service_common.sh" "$1"
"$pfhe" keygen "${spec[@]}" --secret-key sk2 --eval-keys ek2 2> /dev/null
for i in 1 2 3 4; do
  key=sk; eval_keys=ek
  if [ "$i" = 4 ]; then key=sk2; eval_keys=ek2; fi
  "$pfhe" encrypt "${spec[@]}" --secret-key $key --image a.png --out in$i.cts 2> /dev/null
  "$pfhe" infer --params srv/params.pfhe --model srv/model.pfhc --eval-keys $eval_keys --input in$i.cts \
    --out local$i.ct 2> /dev/null
done
serve=("$pfhe" serve --params srv/params.pfhe --model srv/model.pfhc --state-dir state --port 0 --max-requests 1
  --executor mpi --workers 2)

if "${serve[@]}" --retries 1 2> refused.log; then fail "--retries with MPI was accepted"; fi
grep -q "retries applies to the fork executor" refused.log || fail "no reason for refusing --retries: $(cat refused.log)"
if "${serve[@]}" --mpirun /nonexistent/mpirun 2> refused.log; then fail "a missing launcher was accepted"; fi
grep -q "cannot start /nonexistent/mpirun" refused.log || fail "no reason for the missing launcher: $(cat refused.log)"
rm -rf state

"${serve[@]}" 2>> serve.log &
server_pid=$!
await_server
mpirun_pid=$(sed -n 's/.*inference processes (MPI jobs[^)]*): \([0-9]*\)$/\1/p' serve.log)
[ -n "$mpirun_pid" ] || fail "no MPI job logged"
"$pfhe" client register --server "$url" --eval-keys ek > /dev/null
"$pfhe" client register --server "$url" --eval-keys ek2 > /dev/null
"$pfhe" client infer --server "$url" --input in1.cts --out served1.ct 2> /dev/null
cmp local1.ct served1.ct || fail "the MPI ranks' result differs from pfhe infer's"
"$pfhe" client infer --server "$url" --input in4.cts --out served4.ct 2> /dev/null
cmp local4.ct served4.ct || fail "the second key set's result differs from pfhe infer's"
echo "two key sets served on the MPI ranks: results equal pfhe infer's"

# The ranks of an MPI job: mpirun's children, with their rank in the environment.
worker_rank_of() {
  local child
  for child in $(pgrep -P "$1"); do
    tr '\0' '\n' < "/proc/$child/environ" 2> /dev/null | grep -q '^OMPI_COMM_WORLD_RANK=[1-9]' && echo "$child" && return
  done
}
# A worker rank killed while job 2 (or 3, when a job ended too soon) runs.
killed=""
for i in 2 3; do
  job=$("$pfhe" client submit --server "$url" --input in$i.cts)
  for _ in $(seq 1 400); do
    "$pfhe" client status --server "$url" --job "$job" | grep -q '"state":"\(done\|failed\)"' && break
    if "$pfhe" client status --server "$url" --job "$job" | grep -q '"state":"running"'; then
      rank=$(worker_rank_of "$mpirun_pid")
      if [ -n "$rank" ]; then kill -9 "$rank"; killed=$i; break; fi
    fi
    sleep 0.02
  done
  "$pfhe" client fetch --server "$url" --job "$job" --out served$i.ct 2> /dev/null || fail "job $i failed"
  cmp local$i.ct served$i.ct || fail "job $i's result differs"
  [ -z "$killed" ] || break
done
[ -n "$killed" ] || fail "no worker rank could be caught running"
grep -q "inference process $mpirun_pid .* during a job; starting another" serve.log ||
  fail "the ended MPI job was not logged"
echo "a worker rank killed during job $killed: a new MPI job ran it again, the result equals pfhe infer's"

# SIGKILL of the server: rank 0 sees the end of its socket and ends every rank.
ranks=$(pgrep -f "inference-process --executor mpi" | tr '\n' ' ')
[ -n "$ranks" ] || fail "no rank running under the server"
kill -9 "$server_pid"
wait "$server_pid" 2> /dev/null || true
server_pid=""
running() { [ -e "/proc/$1/stat" ] && ! sed 's/^.*) //' "/proc/$1/stat" 2> /dev/null | grep -q '^Z'; }
for _ in $(seq 1 100); do
  left=""
  for r in $ranks; do if running "$r"; then left="$left $r"; fi; done
  [ -n "$left" ] || break
  sleep 0.2
done
[ -z "$left" ] || fail "ranks$left outlived the server by 20 s"
echo "service with MPI ranks: results byte-identical, a killed rank recovered, no rank left"
