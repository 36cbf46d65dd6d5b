#!/usr/bin/env bash
# Templates behind `pfhe serve` (issue 22): a client enrols an encrypted embedding under a
# name and matches probes against it. The served score equals `pfhe match`'s bytes and
# decrypts to the right decisions (the same face matches, another does not); templates
# are per key set (another client's probe does not see them); they survive a restart;
# `forget` removes one. Malformed requests get their status: no threshold (400), garbage
# (400), no Content-Length (411), an announced body too large (413), unknown names (404).
#   service_match.sh PFHE_BINARY
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/service_work.sh" "$1"

"$pfhe" make-model --kind tiny --out model.pfhm 2> /dev/null
"$pfhe" compile --model model.pfhm --out-dir srv --budget-gb 0.25 --lanes 2 2> /dev/null
spec=(--spec srv/client.json --params srv/params.pfhe)
server=(--params srv/params.pfhe --model srv/model.pfhc)
"$pfhe" keygen "${spec[@]}" --secret-key sk --eval-keys ek 2> /dev/null
"$pfhe" keygen "${spec[@]}" --secret-key sk2 --eval-keys ek2 2> /dev/null
"$pfhe" sample-image --size 16 --seed 8 --out alice.png 2> /dev/null
"$pfhe" sample-image --size 16 --seed 8 --variation 0.05 --out alice2.png 2> /dev/null
"$pfhe" sample-image --size 16 --seed 14 --out bob.png 2> /dev/null
for img in alice alice2 bob; do "$pfhe" encrypt "${spec[@]}" --secret-key sk --image $img.png --out $img.cts 2> /dev/null; done
"$pfhe" encrypt "${spec[@]}" --secret-key sk2 --image alice2.png --out other.cts 2> /dev/null

start_server() {
  rm -f state/port
  "$pfhe" serve "${server[@]}" --state-dir state --port 0 2>> serve.log &
  server_pid=$!
  await_server
}
start_server
tag=$("$pfhe" client register --server "$url" --eval-keys ek | sed -n 's/registered key set //p')
"$pfhe" client register --server "$url" --eval-keys ek2 > /dev/null
for img in alice alice2 bob other; do
  "$pfhe" client infer --server "$url" --input $img.cts --out $img.ct 2> /dev/null
done

"$pfhe" client enroll --server "$url" --name alice --embedding alice.ct | grep -q '"template":"alice"' ||
  fail "enrol"
"$pfhe" client enroll --server "$url" --name alice --embedding alice.ct > /dev/null  # the same again: replaced
grep -q "template 'alice' replaced for key set $tag" serve.log || fail "a second enrolment did not replace the first"
"$pfhe" client health --server "$url" | grep -q '"templates":1' || fail "health does not count the template"
for img in alice2 bob; do
  "$pfhe" client match --server "$url" --name alice --input $img.ct --threshold 0.5 --out $img.score 2> /dev/null
  "$pfhe" decrypt "${spec[@]}" --secret-key sk --input $img.score --score --json $img.decision.json 2> /dev/null
done
grep -q '"match": true' alice2.decision.json || fail "the same face did not match: $(cat alice2.decision.json)"
grep -q '"match": false' bob.decision.json || fail "another face matched: $(cat bob.decision.json)"
# The CLI's enrolment and match of the same embeddings give the same score bytes.
"$pfhe" enroll --params srv/params.pfhe --spec srv/client.json --store store --name alice --embedding alice.ct 2> /dev/null
"$pfhe" match "${server[@]}" --eval-keys ek --input alice2.ct --out cli.score --store store --name alice \
  --threshold 0.5 2> /dev/null
cmp cli.score alice2.score || fail "the served score differs from pfhe match's"
echo "templates: enrolled, matched (same face yes, another no), scores equal pfhe match's bytes"

# Templates are per key set: the second client's probe does not reach the first's template.
if "$pfhe" client match --server "$url" --name alice --input other.ct --threshold 0.5 --out x 2> err.txt; then
  fail "another key set's probe matched a template it does not own"
fi
grep -q "HTTP 404.*no template 'alice' for key set" err.txt || { cat err.txt; fail "per-key-set message"; }
if "$pfhe" client match --server "$url" --name carol --input bob.ct --threshold 0.5 --out x 2> err.txt; then
  fail "an unknown template matched"
fi
grep -q "HTTP 404.*no template 'carol'" err.txt || { cat err.txt; fail "unknown template message"; }
if "$pfhe" client enroll --server "$url" --name 'a/b' --embedding alice.ct 2> err.txt; then fail "a bad name"; fi
grep -q "name: 1 to 64 letters" err.txt || { cat err.txt; fail "bad name message"; }

# Malformed requests, sent by hand: status code of each.
/usr/bin/python3 - "$(cat state/port)" <<'PY' || fail "malformed requests"
import socket, sys, urllib.request, urllib.error
port = int(sys.argv[1])
def status(method, path, body=b""):
    # (urllib would call the body a form, which cpp-httplib refuses above 8 kB with 413)
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                 headers={"Content-Type": "application/octet-stream"})
    try:
        return urllib.request.urlopen(req).status
    except urllib.error.HTTPError as e:
        return e.code
def raw(request):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(request)
        return int(s.recv(4096).split(b" ")[1])
probe = open("alice2.ct", "rb").read()
checks = {
    "no threshold": (status("POST", "/v1/templates/alice/match", probe), 400),
    "threshold not a number": (status("POST", "/v1/templates/alice/match?threshold=x", probe), 400),
    "garbage probe": (status("POST", "/v1/templates/alice/match?threshold=1", b"garbage"), 400),
    "garbage template": (status("PUT", "/v1/templates/zed", b"garbage"), 400),
    "no length": (raw(b"PUT /v1/templates/zed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 411),
    "too large": (raw(b"PUT /v1/templates/zed HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n\r\n"), 413),
    "forget without key set": (status("DELETE", "/v1/templates/alice"), 400),
}
bad = {k: v for k, v in checks.items() if v[0] != v[1]}
print("malformed requests:", ", ".join(f"{k} {v[0]}" for k, v in checks.items()))
sys.exit(1 if bad else 0)
PY

# A restart keeps the templates and removes what a crash cut off; forget removes one.
kill -TERM "$server_pid"
wait "$server_pid" || true
echo "cut off" > "state/templates/$tag/bob.ct.partial"
start_server
[ ! -e "state/templates/$tag/bob.ct.partial" ] || fail "a partial template was left at the restart"
"$pfhe" client match --server "$url" --name alice --input alice2.ct --threshold 0.5 --out again.score 2> /dev/null
cmp alice2.score again.score || fail "the template did not survive the restart"
"$pfhe" client forget --server "$url" --name alice --key-set "$tag" | grep -q '"removed":"alice"' || fail "forget"
if "$pfhe" client match --server "$url" --name alice --input alice2.ct --threshold 0.5 --out x 2> err.txt; then
  fail "a forgotten template matched"
fi
if "$pfhe" client forget --server "$url" --name alice --key-set "$tag" 2> err.txt; then fail "forgotten twice"; fi
grep -q "HTTP 404" err.txt || { cat err.txt; fail "second forget message"; }
echo "templates survive a restart; forget removes one; malformed requests get their status"
