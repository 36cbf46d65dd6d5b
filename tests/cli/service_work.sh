# Sourced by the service tests: a work directory removed on exit (with the server when one
# runs: set server_pid), fail(), and await_server (waits for a server started in the
# background with --state-dir state --port 0 to write its port; sets url).
#   source service_work.sh PFHE_BINARY
pfhe=$1
work=$(mktemp -d)
server_pid=""
cleanup() { [ -z "$server_pid" ] || kill "$server_pid" 2> /dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
fail() { echo "FAIL: $*" >&2; [ ! -f serve.log ] || cat serve.log >&2; exit 1; }
await_server() {
  for _ in $(seq 1 120); do [ -s state/port ] && break; sleep 0.5; done
  [ -s state/port ] || fail "the server did not start"
  url="http://127.0.0.1:$(cat state/port)"
}
