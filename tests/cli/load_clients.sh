# Sourced by the service load test and its CryptoFaceNet4 benchmark (needs $pfhe and $url):
# clients that each send their encrypted inputs in.C.I.cts one after another, results in
# got.C.I.ct, each request's latency in milliseconds appended to latency.ms.

client_loop() {  # client_loop C FIRST LAST
  for i in $(seq "$2" "$3"); do
    local t0 t1
    t0=$(date +%s%N)
    "$pfhe" client infer --server "$url" --input in.$1.$i.cts --out got.$1.$i.ct 2> log.$1.$i || return 1
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000)) >> latency.ms
  done
}

run_clients() {  # run_clients CLIENTS FIRST LAST: every client at once; false if a request failed
  local pids=() status=0
  for c in $(seq 1 "$1"); do client_loop "$c" "$2" "$3" & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  return $status
}
