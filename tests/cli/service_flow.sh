#!/usr/bin/env bash
# `pfhe serve` / `pfhe client` (issue 22): a two-tower graph served over HTTP. The service's
# result equals `pfhe infer`'s byte for byte; registered keys survive a restart; a busy
# server (--max-requests 1) or one restarting makes clients wait, not fail; bad requests
# get clear errors and the service keeps running.
#   service_flow.sh PFHE_BINARY
set -euo pipefail
pfhe=$1
work=$(mktemp -d)
server_pid=""
cleanup() { [ -z "$server_pid" ] || kill "$server_pid" 2> /dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
fail() { echo "FAIL: $*" >&2; [ ! -f serve.log ] || cat serve.log >&2; exit 1; }

"$pfhe" make-model --kind two-tower-tiny --out m.pfhm 2> /dev/null
"$pfhe" compile --model m.pfhm --out-dir srv --budget-gb 0.05 2> /dev/null
spec=(--spec srv/client.json --params srv/params.pfhe)
"$pfhe" keygen "${spec[@]}" --secret-key sk --eval-keys ek 2> /dev/null
"$pfhe" sample-image --size 8 --seed 4 --out a.png 2> /dev/null
"$pfhe" encrypt "${spec[@]}" --secret-key sk --image a.png --out a.cts 2> /dev/null
"$pfhe" infer --params srv/params.pfhe --model srv/model.pfhc --eval-keys ek --input a.cts --out local.ct 2> /dev/null

start_server() {  # start_server [PORT]
  rm -f state/port
  "$pfhe" serve --params srv/params.pfhe --model srv/model.pfhc --state-dir state --port "${1:-0}" --max-requests 1 \
    2>> serve.log &
  server_pid=$!
  for _ in $(seq 1 120); do [ -s state/port ] && break; sleep 0.5; done
  [ -s state/port ] || fail "the server did not start"
  url="http://127.0.0.1:$(cat state/port)"
}
start_server
"$pfhe" client health --server "$url" | grep -q '"key_sets":0' || fail "health before registration"
# Unregistered keys: a clear error, not a crash.
if "$pfhe" client infer --server "$url" --input a.cts --out x.ct 2> err.txt; then fail "unknown key set accepted"; fi
grep -q "HTTP 404.*unknown key set.*register the evaluation keys first" err.txt || { cat err.txt; fail "404 message"; }
"$pfhe" client register --server "$url" --eval-keys ek | grep -q "registered key set" || fail "register"
"$pfhe" client infer --server "$url" --input a.cts --out served.ct 2> /dev/null
cmp local.ct served.ct || fail "the service's result differs from pfhe infer's"
"$pfhe" decrypt "${spec[@]}" --secret-key sk --input served.ct > /dev/null
# Garbage is refused and the service goes on.
head -c 5000 a.cts > cut.cts
if "$pfhe" client infer --server "$url" --input cut.cts --out x.ct 2> err.txt; then fail "truncated input accepted"; fi
grep -q "HTTP 400.*the encrypted input" err.txt || { cat err.txt; fail "400 message"; }
echo "not keys" > bad.keys
if "$pfhe" client register --server "$url" --eval-keys bad.keys 2> err.txt; then fail "garbage keys registered"; fi
grep -q "HTTP 400" err.txt || { cat err.txt; fail "bad keys message"; }
# An inference announcing more than any encrypted input is refused before its body is read.
exec 3<> "/dev/tcp/127.0.0.1/$(cat state/port)"
printf 'POST /v1/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999\r\nConnection: close\r\n\r\n' >&3
status_line=$(head -n 1 <&3 | tr -d '\r')
exec 3<&-
[ "$status_line" = "HTTP/1.1 413 Payload Too Large" ] || fail "oversized request: '$status_line'"
# Three requests at once with one allowed: the others wait and retry; all give the same bytes.
clients=()
for i in 1 2 3; do "$pfhe" client infer --server "$url" --input a.cts --out c$i.ct 2> c$i.log & clients+=($!); done
for pid in "${clients[@]}"; do wait "$pid" || fail "a concurrent request failed"; done
for i in 1 2 3; do cmp local.ct c$i.ct || { cat c$i.log; fail "concurrent request $i"; }; done
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
if "$pfhe" client infer --server http://127.0.0.1:1 --input a.cts --out x.ct --wait 0 2> err.txt; then
  fail "an unreachable server gave a result"
fi
grep -q "127.0.0.1:1: " err.txt || { cat err.txt; fail "unreachable server message"; }
echo "service flow: all checks passed"
