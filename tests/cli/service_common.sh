# Sourced by the service tests: a work directory removed on exit (with the server when one
# runs: set server_pid), fail(), and in it a compiled two-tower-tiny graph (srv/), one
# client's keys (sk, ek; spec=(...) for the client commands) and an image (a.png).
#   source service_common.sh PFHE_BINARY
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
