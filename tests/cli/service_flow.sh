#!/usr/bin/env bash
# `pfhe serve` / `pfhe client` (issue 22): a two-tower graph served over HTTP. The service's
# result equals `pfhe infer`'s byte for byte; the same input is the same job; registered
# keys and accepted jobs survive a restart, a SIGKILL included (queued jobs run after it);
# SIGTERM drains (the running job finishes); finished jobs expire after --keep-jobs; a
# damaged key cache fails its jobs clearly; a full disk refuses a registration; a full
# queue or a restarting server makes clients wait, not fail; bad requests and a client gone
# mid-upload get clear errors or nothing, and the service keeps running.
#   service_flow.sh PFHE_BINARY
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/service_common.sh" "$1"
"$pfhe" encrypt "${spec[@]}" --secret-key sk --image a.png --out a.cts 2> /dev/null
"$pfhe" infer --params srv/params.pfhe --model srv/model.pfhc --eval-keys ek --input a.cts --out local.ct 2> /dev/null

start_server() {  # start_server [PORT [OPTION...]]
  rm -f state/port
  "$pfhe" serve --params srv/params.pfhe --model srv/model.pfhc --state-dir state --port "${1:-0}" --max-requests 1 \
    --max-queue 2 "${@:2}" 2>> serve.log &
  server_pid=$!
  await_server
}
start_server
"$pfhe" client health --server "$url" | grep -q '"key_sets":0' || fail "health before registration"
# Unregistered keys: a clear error, not a crash.
if "$pfhe" client infer --server "$url" --input a.cts --out x.ct 2> err.txt; then fail "unknown key set accepted"; fi
grep -q "HTTP 404.*unknown key set.*register the evaluation keys first" err.txt || { cat err.txt; fail "404 message"; }
"$pfhe" client register --server "$url" --eval-keys ek | grep -q "registered key set" || fail "register"
"$pfhe" client infer --server "$url" --input a.cts --out served.ct 2> /dev/null
cmp local.ct served.ct || fail "the service's result differs from pfhe infer's"
# The job API: the same input is the same (done) job; its status and result stay.
job=$("$pfhe" client submit --server "$url" --input a.cts)
"$pfhe" client status --server "$url" --job "$job" | grep -q '"state":"done"' || fail "status of a done job"
"$pfhe" client fetch --server "$url" --job "$job" --out fetched.ct 2> /dev/null
cmp local.ct fetched.ct || fail "fetched result"
if "$pfhe" client status --server "$url" --job 0123456789abcdef 2> err.txt; then fail "an unknown job has a status"; fi
grep -q "HTTP 404.*no job 0123456789abcdef" err.txt || { cat err.txt; fail "unknown job message"; }
"$pfhe" decrypt "${spec[@]}" --secret-key sk --input served.ct > /dev/null
# A classifier's logits are no template (service_match tests templates on an embedder).
if "$pfhe" client enroll --server "$url" --name a --embedding served.ct 2> err.txt; then fail "logits enrolled"; fi
grep -q "HTTP 400.*classifier" err.txt || { cat err.txt; fail "classifier template message"; }
# Garbage is refused and the service goes on.
head -c 5000 a.cts > cut.cts
if "$pfhe" client infer --server "$url" --input cut.cts --out x.ct 2> err.txt; then fail "truncated input accepted"; fi
grep -q "HTTP 400.*the encrypted input" err.txt || { cat err.txt; fail "400 message"; }
# A secret key is never taken (the server says what it is).
if "$pfhe" client register --server "$url" --eval-keys sk 2> err.txt; then fail "a secret key was registered"; fi
grep -q "HTTP 400.*a secret key, not evaluation keys" err.txt || { cat err.txt; fail "secret key message"; }
echo "not keys" > bad.keys
if "$pfhe" client register --server "$url" --eval-keys bad.keys 2> err.txt; then fail "garbage keys registered"; fi
grep -q "HTTP 400" err.txt || { cat err.txt; fail "bad keys message"; }
# A full disk while keys are stored (uploads written to /dev/full): the server refuses and
# logs it (HTTP 507), the client reports it without a crash (SIGPIPE is not fatal), and
# the service goes on.
for n in $(seq 0 40); do ln -s /dev/full "state/keys/.upload-$server_pid-$n" 2> /dev/null || true; done
if "$pfhe" client register --server "$url" --eval-keys ek --wait 1 2> err.txt; then fail "keys stored on a full disk"; fi
grep -q "closed the connection while the request was sent" err.txt || { cat err.txt; fail "full disk: client message"; }
grep -q "key registration: refused: the disk is full" serve.log || fail "the full disk was not logged"
find state/keys -name '.upload-*' -type l -delete
# A job input that finds the disk full (its journal file written to /dev/full): HTTP 507,
# nothing journaled, logged (regression: the write error was answered 400, as if the
# request were malformed).
"$pfhe" encrypt "${spec[@]}" --secret-key sk --image a.png --out full.cts 2> /dev/null
job=$(/usr/bin/python3 -c 'import sys, xxhash; print(xxhash.xxh3_64_hexdigest(open(sys.argv[1], "rb").read()))' full.cts)
ln -s /dev/full "state/jobs/$job.input.partial"
if "$pfhe" client submit --server "$url" --input full.cts --wait 1 2> err.txt; then fail "a job stored on a full disk"; fi
grep -q "HTTP 507.*disk is full" err.txt || { cat err.txt; fail "full disk: job message"; }
grep -q "job: not stored: .*No space left on device" serve.log || fail "the full disk (job) was not logged"
[ ! -e "state/jobs/$job.input" ] && [ ! -L "state/jobs/$job.input.partial" ] || fail "a job refused on a full disk left files"
# An inference announcing more than any encrypted input is refused before its body is read.
exec 3<> "/dev/tcp/127.0.0.1/$(cat state/port)"
printf 'POST /v1/jobs HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999\r\nConnection: close\r\n\r\n' >&3
status_line=$(head -n 1 <&3 | tr -d '\r')
exec 3<&-
[ "$status_line" = "HTTP/1.1 413 Payload Too Large" ] || fail "oversized request: '$status_line'"
# A client that goes away mid-upload leaves no job, and the service goes on.
accepted=$("$pfhe" client metrics --server "$url" | sed 's/.*"jobs_accepted":\([0-9]*\).*/\1/')
exec 3<> "/dev/tcp/127.0.0.1/$(cat state/port)"
printf 'POST /v1/jobs HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n' >&3
head -c 3000 a.cts >&3
exec 3<&-
sleep 1
"$pfhe" client metrics --server "$url" | grep -q "\"jobs_accepted\":$accepted," || fail "a cut-off upload became a job"
# Two jobs submitted fill the queue (one running, two accepted at a time): a submission
# that does not wait is refused as busy (HTTP 503). Then six distinct inputs at once, asking
# again while the server is busy: every result equals pfhe infer's. (Regression: the
# refusal used to be checked in the concurrent clients' logs, and jobs of ~1 s sometimes
# drained the queue before any client asked, beside other tests.)
for i in 1 2 3 4 5 6; do
  "$pfhe" encrypt "${spec[@]}" --secret-key sk --image a.png --out b$i.cts 2> /dev/null
  "$pfhe" infer --params srv/params.pfhe --model srv/model.pfhc --eval-keys ek --input b$i.cts --out b$i.local.ct \
    2> /dev/null
done
for i in 1 2 3 4 5 6; do "$pfhe" encrypt "${spec[@]}" --secret-key sk --image a.png --out q$i.cts 2> /dev/null; done
for i in 1 2; do "$pfhe" client submit --server "$url" --input q$i.cts > /dev/null; done
refused=0
for i in 3 4 5 6; do  # distinct inputs: each accepted one takes a place (a job lasts ~1 s, a submission ~0.2 s)
  if ! "$pfhe" client submit --server "$url" --input q$i.cts --wait 0 > /dev/null 2> q.err; then
    grep -q "503.*busy" q.err || { cat q.err; fail "a refused submission does not say the server is busy"; }
    refused=1
    break
  fi
done
[ "$refused" = 1 ] || fail "no submission was told the queue is full"
clients=()
for i in 1 2 3 4 5 6; do "$pfhe" client infer --server "$url" --input b$i.cts --out c$i.ct 2> c$i.log & clients+=($!); done
for pid in "${clients[@]}"; do wait "$pid" || fail "a concurrent request failed"; done
for i in 1 2 3 4 5 6; do cmp b$i.local.ct c$i.ct || { cat c$i.log; fail "concurrent request $i"; }; done
# Jobs accepted and then the server SIGKILLed: after a restart every one of them is done,
# with the same bytes. (The queue is rebuilt from the journal in state/jobs.)
for i in 1 2 3 4; do
  "$pfhe" encrypt "${spec[@]}" --secret-key sk --image a.png --out k$i.cts 2> /dev/null
  "$pfhe" infer --params srv/params.pfhe --model srv/model.pfhc --eval-keys ek --input k$i.cts --out k$i.local.ct \
    2> /dev/null
done
jobs_before=$(ls state/jobs/*.result | wc -l)
for i in 1 2; do "$pfhe" client submit --server "$url" --input k$i.cts > k$i.job; done
kill -9 "$server_pid"; wait "$server_pid" 2> /dev/null || true
[ "$(ls state/jobs/*.result | wc -l)" -lt "$((jobs_before + 2))" ] || fail "both jobs finished before the kill"
start_server
for i in 3 4; do "$pfhe" client submit --server "$url" --input k$i.cts > k$i.job; done
for i in 1 2 3 4; do
  "$pfhe" client fetch --server "$url" --job "$(cat k$i.job)" --out k$i.ct 2> /dev/null
  cmp k$i.local.ct k$i.ct || fail "job $i after the SIGKILL"
done
"$pfhe" client metrics --server "$url" | grep -q '"jobs_failed":0' || fail "a job failed"
# SIGTERM drains: the running job finishes before the server exits (status 0).
"$pfhe" encrypt "${spec[@]}" --secret-key sk --image a.png --out t.cts 2> /dev/null
term_job=$("$pfhe" client submit --server "$url" --input t.cts)
kill -TERM "$server_pid"
wait "$server_pid" || fail "the server did not exit cleanly on SIGTERM"
grep -q "draining" serve.log || fail "no drain on SIGTERM"
start_server
"$pfhe" client fetch --server "$url" --job "$term_job" --out t.ct 2> /dev/null
"$pfhe" decrypt "${spec[@]}" --secret-key sk --input t.ct > /dev/null || fail "the drained job's result"
# A restart keeps the registered key set (no new registration needed), and a request sent
# while the service is down waits for it instead of failing.
port=$(cat state/port)
kill "$server_pid"; wait "$server_pid" 2> /dev/null || true
"$pfhe" client infer --server "$url" --input a.cts --out again.ct --wait 120 2> again.log &
waiting=$!
sleep 3
start_server "$port"
wait "$waiting" || { cat again.log; fail "the request sent during the restart failed"; }
grep -q "cannot reach the server" again.log || { cat again.log; fail "the client did not wait for the server"; }
cmp local.ct again.ct || fail "result after restart"
"$pfhe" client health --server "$url" | grep -q '"key_sets":1' || fail "the key set did not survive a restart"
# A registered key set is kept as its expanded key cache only, and a damaged cache is a
# failed job naming the file, not wrong numbers; the service goes on.
caches=(state/keys/*.cache)
[ "${#caches[@]}" = 1 ] && [ -z "$(ls state/keys/*.keys state/keys/.upload-* 2> /dev/null)" ] ||
  { ls -la state/keys; fail "the registered keys are not one key cache"; }
cache=${caches[0]}
kill "$server_pid"; wait "$server_pid" 2> /dev/null || true
cp "$cache" cache.intact
printf '\x5a' | dd of="$cache" bs=1 seek=$(( $(stat -c %s "$cache") / 2 )) conv=notrunc 2> /dev/null
cmp -s "$cache" cache.intact && printf '\xa5' | dd of="$cache" bs=1 seek=$(( $(stat -c %s "$cache") / 2 )) conv=notrunc 2> /dev/null
"$pfhe" encrypt "${spec[@]}" --secret-key sk --image a.png --out d.cts 2> /dev/null  # a new job
start_server
if "$pfhe" client infer --server "$url" --input d.cts --out x.ct 2> err.txt; then fail "a damaged key cache was used"; fi
grep -q "$(basename "$cache").*checksum mismatch" err.txt || { cat err.txt; fail "damaged key cache message"; }
"$pfhe" client health --server "$url" > /dev/null || fail "the service stopped after a damaged key cache"
# A key file placed in the key directory (by an operator, or a pfhe before key caches) is
# expanded into its cache when first needed.
kill "$server_pid"; wait "$server_pid" 2> /dev/null || true
rm "$cache"
cp ek "${cache%.cache}.keys"
start_server
"$pfhe" client infer --server "$url" --input d.cts --out placed.ct 2> /dev/null || fail "a placed key file"
"$pfhe" infer --params srv/params.pfhe --model srv/model.pfhc --eval-keys ek --input d.cts --out d.local.ct 2> /dev/null
cmp d.local.ct placed.ct || fail "result with a placed key file"
[ -f "$cache" ] && [ ! -f "${cache%.cache}.keys" ] || { ls -la state/keys; fail "the placed key file was not expanded"; }
# Retention: finished jobs older than --keep-jobs are removed at start and while the
# service runs; their ids are then unknown (404) and their files gone.
kill "$server_pid"; wait "$server_pid" 2> /dev/null || true
start_server 0 --keep-jobs 2
if "$pfhe" client status --server "$url" --job "$job" 2> err.txt; then fail "an old job outlived its retention"; fi
grep -q "HTTP 404.*no job $job" err.txt || { cat err.txt; fail "expired job message"; }
[ ! -e "state/jobs/$job.input" ] && [ ! -e "state/jobs/$job.result" ] || fail "an expired job's files remain"
"$pfhe" encrypt "${spec[@]}" --secret-key sk --image a.png --out e.cts 2> /dev/null
fresh=$("$pfhe" client submit --server "$url" --input e.cts)
"$pfhe" client fetch --server "$url" --job "$fresh" --out e.ct 2> /dev/null || fail "a job within its retention"
sleep 4
if "$pfhe" client status --server "$url" --job "$fresh" 2> /dev/null; then fail "a finished job outlived its retention"; fi
"$pfhe" client metrics --server "$url" | grep -q '"jobs_expired":[1-9]' || fail "expired jobs not counted"
if "$pfhe" client infer --server http://127.0.0.1:1 --input a.cts --out x.ct --wait 0 2> err.txt; then
  fail "an unreachable server gave a result"
fi
grep -q "127.0.0.1:1: " err.txt || { cat err.txt; fail "unreachable server message"; }
echo "service flow: all checks passed"
