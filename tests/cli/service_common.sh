# Sourced by the service tests: service_work.sh, and in its work directory a compiled
# two-tower-tiny graph (srv/), one client's keys (sk, ek; spec=(...) for the client
# commands) and an image (a.png).
#   source service_common.sh PFHE_BINARY
source "$(dirname "${BASH_SOURCE[0]}")/service_work.sh" "$1"

"$pfhe" make-model --kind two-tower-tiny --out m.pfhm 2> /dev/null
"$pfhe" compile --model m.pfhm --out-dir srv --budget-gb 0.05 2> /dev/null
spec=(--spec srv/client.json --params srv/params.pfhe)
"$pfhe" keygen "${spec[@]}" --secret-key sk --eval-keys ek 2> /dev/null
"$pfhe" sample-image --size 8 --seed 4 --out a.png 2> /dev/null
