#!/usr/bin/env bash
# The client/server CLI end to end on the "tiny" PatchCNN at 128-bit secure parameters:
# compile, keygen, encrypt, infer on every executor (outputs must be byte-identical),
# decrypt (precision against float64), enroll and match (decisions), and the failure
# cases: truncated and corrupted inputs, files of another key set, missing files; then a
# two-tower model graph through the same commands.
#   cli_flow.sh PFHE_BINARY [MPIRUN]
set -euo pipefail
pfhe=$1
mpirun=${2:-}
mpi_run=$(cd "$(dirname "$0")/.." && pwd)/mpi_run.sh  # tolerates Open MPI 4.x's PID-0 teardown race only
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

fail() { echo "FAIL: $*" >&2; exit 1; }
# expect_error PATTERN CMD...: CMD must exit non-zero (not crash) and print PATTERN.
expect_error() {
  local pattern=$1; shift
  local status=0
  "$@" > out.txt 2>&1 || status=$?
  [ "$status" -ne 0 ] || fail "expected failure: $*"
  [ "$status" -lt 128 ] || fail "crashed (status $status): $*"
  grep -q -- "$pattern" out.txt || { cat out.txt; fail "message lacks '$pattern': $*"; }
}

spec=(--spec srv/client.json --params srv/params.pfhe)
server=(--params srv/params.pfhe --model srv/model.pfhc --eval-keys eval.keys)

"$pfhe" make-model --kind tiny --out model.pfhm
"$pfhe" sample-image --size 16 --seed 8 --out alice.png
"$pfhe" sample-image --size 16 --seed 8 --variation 0.05 --out alice2.png
"$pfhe" sample-image --size 16 --seed 14 --out bob.png
"$pfhe" compile --model model.pfhm --out-dir srv --budget-gb 0.25 --lanes 2 2> compile.txt  # two tasks of two patches
cat compile.txt >&2
# The tiny model's pooling head runs in the half ring (every command below goes through it).
grep -q "ring switch at level" compile.txt || fail "compile did not switch rings for the tiny model"
grep -q '"ring_switch": {' srv/client.json || fail "the client spec does not name the ring switch"
"$pfhe" keygen "${spec[@]}" --secret-key sk.key --eval-keys eval.keys
[ "$(stat -c %a sk.key)" = 600 ] || fail "secret key file is not owner-only"
for img in alice alice2 bob; do
  "$pfhe" encrypt "${spec[@]}" --secret-key sk.key --image $img.png --out $img.cts
done

# Every executor gives the same bytes.
"$pfhe" infer "${server[@]}" --input alice.cts --out alice.seq.ct --executor seq --json seq.json
"$pfhe" infer "${server[@]}" --input alice.cts --out alice.threads.ct --executor threads --workers 2
"$pfhe" infer "${server[@]}" --input alice.cts --out alice.fork.ct --executor fork --workers 3 2> fork-progress.txt
for g in 1 2; do  # every lane group reports from its worker
  grep -q "branch $g of 2 done" fork-progress.txt || { cat fork-progress.txt; fail "no progress line for group $g"; }
done
grep -Eq "loaded in [0-9.]+ s \(model [0-9.]+ s, evaluation keys [0-9.]+ s\)" fork-progress.txt ||
  { cat fork-progress.txt; fail "infer does not report its model and key loading times"; }
"$pfhe" infer "${server[@]}" --input alice.cts --out alice.fork8.ct --executor fork --workers 8
for e in threads fork fork8; do cmp alice.seq.ct alice.$e.ct || fail "$e output differs from sequential"; done
if [ -n "$mpirun" ]; then
  OMP_NUM_THREADS=1 "$mpi_run" "$mpirun" -np 3 --oversubscribe --allow-run-as-root \
    "$pfhe" infer "${server[@]}" --input alice.cts --out alice.mpi.ct --executor mpi
  cmp alice.seq.ct alice.mpi.ct || fail "MPI output differs from sequential"
fi
grep -q '"executor": "seq"' seq.json || fail "no JSON report"
# The keys expanded into a key cache (mapped in place) give the same bytes, forked too.
"$pfhe" expand-keys "${spec[@]}" --eval-keys eval.keys --out eval.cache
"$pfhe" infer --params srv/params.pfhe --model srv/model.pfhc --eval-keys eval.cache --input alice.cts \
  --out alice.cached.ct --executor fork --workers 2
cmp alice.seq.ct alice.cached.ct || fail "the key cache's output differs from the key file's"

# Serving the model file itself (lazy mode, for grids whose artefact would not fit): a
# plan-only compile gives the same client spec, and the tasks compile their lane groups
# when they run: the same bytes.
"$pfhe" compile --model model.pfhm --out-dir plan --lanes 2 --plan-only
[ ! -e plan/model.pfhc ] || fail "plan-only compile wrote an artefact"
cmp plan/client.json srv/client.json || fail "plan-only client spec differs from the compiled one"
# A precision target picks a smaller scale than the default 2^40; targets beyond reach
# or out of range are refused.
"$pfhe" compile --model model.pfhm --out-dir plan12 --plan-only --precision-bits 12 2> compile12.txt
grep -Eq "scale=2\^3[0-9]($|[^0-9])" compile12.txt || { cat compile12.txt; fail "--precision-bits 12 did not choose a 30-39 bit scale"; }
grep -q "estimated precision of the encrypted output" compile12.txt || fail "compile prints no precision estimate"
expect_error "not reachable" "$pfhe" compile --model model.pfhm --out-dir plan39 --plan-only --precision-bits 39
expect_error "precision-bits" "$pfhe" compile --model model.pfhm --out-dir plan41 --plan-only --precision-bits 41
lazy=(--params srv/params.pfhe --model model.pfhm --eval-keys eval.keys --lanes 2)
"$pfhe" infer "${lazy[@]}" --input alice.cts --out alice.lazy.ct --executor fork --workers 2 2> lazy-progress.txt
grep -q "compiled when its task runs" lazy-progress.txt || { cat lazy-progress.txt; fail "no lazy-mode notice"; }
cmp alice.seq.ct alice.lazy.ct || fail "lazy (per-task compile) output differs from the compiled model's"
expect_error "another --lanes" "$pfhe" infer --params srv/params.pfhe --model model.pfhm --eval-keys eval.keys \
  --lanes 4 --input alice.cts --out x.ct
expect_error "lanes are chosen when compiling" "$pfhe" infer "${server[@]}" --lanes 2 --input alice.cts --out x.ct

# pfhe bench: every configuration in its own process, outputs compared byte for byte
# (exit status 0 only when all agree), the sequential run's bytes equal infer's. (Threads
# and fork workers agree with the sequential run above; bench runs the two configurations
# only it has.)
"$pfhe" bench "${server[@]}" --input alice.cts --model-file model.pfhm --runs seq,recompile:2 \
  --out-dir bench-out --json bench.json > bench.md
grep -q '| recompile W=2 |.*| byte-identical |' bench.md || { cat bench.md; fail "bench table lacks the recompile row"; }
cmp alice.seq.ct bench-out/run-0.ct || fail "bench sequential output differs from infer's"
python3 -c "import json,sys; r=json.load(open('bench.json'))['runs']; sys.exit(0 if len(r) == 2 and all(x['byte_identical'] for x in r) else 1)" \
  || fail "bench JSON: $(cat bench.json)"
expect_error "fork:W" "$pfhe" bench "${server[@]}" --input alice.cts --runs seq,fork:0
expect_error "model-file" "$pfhe" bench "${server[@]}" --input alice.cts --runs recompile:2

# Precision against the float64 reference.
"$pfhe" decrypt "${spec[@]}" --secret-key sk.key --input alice.seq.ct \
  --reference-model model.pfhm --reference-image alice.png --json precision.json
python3 -c "import json,sys; r=json.load(open('precision.json'))['relative_error']; sys.exit(0 if r < 1e-3 else 1)" \
  || fail "relative error above 1e-3: $(cat precision.json)"

# Enrolment and encrypted matching: the same face matches, another does not.
"$pfhe" enroll --params srv/params.pfhe --spec srv/client.json --store store --name alice --embedding alice.seq.ct
for img in alice2 bob; do
  "$pfhe" infer "${server[@]}" --input $img.cts --out $img.ct --executor fork --workers 2
  "$pfhe" match "${server[@]}" --input $img.ct --out $img.score --store store --name alice --threshold 0.5
  "$pfhe" decrypt "${spec[@]}" --secret-key sk.key --input $img.score --score --json $img.decision.json
done
grep -q '"match": true' alice2.decision.json || fail "the same face did not match: $(cat alice2.decision.json)"
grep -q '"match": false' bob.decision.json || fail "another face matched: $(cat bob.decision.json)"

# Failures: clear errors, never a crash.
head -c 1000000 alice.cts > truncated.cts
expect_error "truncated\|ends\|short" "$pfhe" infer "${server[@]}" --input truncated.cts --out x.ct
cp alice.cts corrupt.cts
printf '\xff\xff\xff\xff\xff\xff\xff\xff' | dd of=corrupt.cts bs=1 seek=200 conv=notrunc status=none
expect_error "corrupt.cts: checksum mismatch" "$pfhe" infer "${server[@]}" --input corrupt.cts --out x.ct
"$pfhe" keygen "${spec[@]}" --secret-key other.key --eval-keys other.keys
expect_error "different key sets" "$pfhe" infer --params srv/params.pfhe --model srv/model.pfhc \
  --eval-keys other.keys --input alice.cts --out x.ct
expect_error "different key sets" "$pfhe" decrypt "${spec[@]}" --secret-key other.key --input alice.seq.ct
expect_error "not a pfhe" "$pfhe" infer --params srv/params.pfhe --model alice.png --eval-keys eval.keys \
  --input alice.cts --out x.ct
expect_error "does not exist\|not found\|cannot" "$pfhe" infer "${server[@]}" --input missing.cts --out x.ct
expect_error "no enrolled template" "$pfhe" match "${server[@]}" --input bob.ct --out x --store store --name carol \
  --threshold 0.5
expect_error "budget-gb" "$pfhe" compile --model model.pfhm --out-dir bad --budget-gb -1
expect_error "unknown executor" "$pfhe" infer "${server[@]}" --input alice.cts --out x.ct --executor gpu
expect_error "applies to the fork executor" "$pfhe" infer "${server[@]}" --input alice.cts --out x.ct \
  --executor threads --retries 1
# The same model without the ring switch: its keys and files do not mix with the switching one's.
"$pfhe" compile --model model.pfhm --out-dir flat --budget-gb 0.25 --lanes 2 --no-ring-switch
grep -q '"ring_switch": null' flat/client.json || fail "--no-ring-switch still switches"
expect_error "made for a model that switches to the half ring" "$pfhe" infer --params flat/params.pfhe \
  --model flat/model.pfhc --eval-keys eval.keys --input alice.cts --out x.ct
expect_error "5 objects, expected 2 (made for a model that switches to the half ring?)" "$pfhe" expand-keys --spec flat/client.json \
  --params flat/params.pfhe --eval-keys eval.keys --out x.cache
expect_error "key cache with half-ring keys" "$pfhe" infer --params flat/params.pfhe \
  --model flat/model.pfhc --eval-keys eval.cache --input alice.cts --out x.ct
expect_error "made for a model that switches to the half ring" "$pfhe" decrypt --spec flat/client.json \
  --params flat/params.pfhe --secret-key sk.key --input alice.seq.ct
expect_error "not to --plan-only" "$pfhe" compile --model model.pfhm --out-dir bad --plan-only --no-ring-switch
# Running out of memory (address space capped below what loading needs) is a clear error.
expect_error "memory" bash -c "ulimit -v 600000; exec \"$pfhe\" infer ${server[*]} --input alice.cts --out x.ct"

# A model graph (two towers summed: one parallel region of two branches) through the same
# commands: its branches are the executors' tasks, every executor gives the same bytes,
# and the logits decrypt to the float64 forward.
"$pfhe" make-model --kind two-tower-tiny --out towers.pfhm
"$pfhe" compile --model towers.pfhm --out-dir gsrv --budget-gb 0.1 2> gcompile.txt
grep -q "1 parallel region(s) with 2 branch tasks" gcompile.txt || { cat gcompile.txt; fail "no branches found"; }
# Its half ring would save time but grow the evaluation keys by half: no switch.
grep -q "no ring switch (no level where the half ring pays off in time and key size)" gcompile.txt ||
  { cat gcompile.txt; fail "two-tower-tiny switched rings although its keys would grow"; }
gspec=(--spec gsrv/client.json --params gsrv/params.pfhe)
gserver=(--params gsrv/params.pfhe --model gsrv/model.pfhc --eval-keys g.keys --input g.cts)
"$pfhe" keygen "${gspec[@]}" --secret-key g.key --eval-keys g.keys
"$pfhe" sample-image --size 8 --seed 3 --out small.png
"$pfhe" encrypt "${gspec[@]}" --secret-key g.key --image small.png --out g.cts
"$pfhe" infer "${gserver[@]}" --out g.seq.ct --json g.infer.json
# The report times every step run outside the branches (here the join and the head).
python3 -c 'import json,sys; s=json.load(open("g.infer.json"))["steps"]; sys.exit(0 if s and all(x["seconds"] >= 0 and x["name"] for x in s) else 1)' ||
  fail "graph: no step times in the infer report: $(cat g.infer.json)"
"$pfhe" infer "${gserver[@]}" --out g.threads.ct --executor threads --workers 2 2> gthreads.txt
# Branches finishing together on two threads still report one whole line each.
for b in 1 2; do grep -Eq "^\[pfhe\] branch $b of 2 done in [0-9.]+ s$" gthreads.txt ||
  { cat gthreads.txt; fail "threads: progress line of branch $b garbled or missing"; }; done
"$pfhe" infer "${gserver[@]}" --out g.fork.ct --executor fork --workers 2 2> gfork.txt
for b in 1 2; do grep -q "branch $b of 2 done" gfork.txt || { cat gfork.txt; fail "no progress for branch $b"; }; done
for e in threads fork; do cmp g.seq.ct g.$e.ct || fail "graph: $e output differs from sequential"; done
if [ -n "$mpirun" ]; then
  OMP_NUM_THREADS=1 "$mpi_run" "$mpirun" -np 3 --oversubscribe --allow-run-as-root "$pfhe" infer "${gserver[@]}" --out g.mpi.ct \
    --executor mpi
  cmp g.seq.ct g.mpi.ct || fail "graph: MPI output differs from sequential"
fi
# Served from the model file itself: compiled at load exactly as compile did.
"$pfhe" infer --params gsrv/params.pfhe --model towers.pfhm --eval-keys g.keys --input g.cts --out g.file.ct
cmp g.seq.ct g.file.ct || fail "graph: serving the model file differs from the compiled artefact"
"$pfhe" decrypt "${gspec[@]}" --secret-key g.key --input g.seq.ct --reference-model towers.pfhm \
  --reference-image small.png --json g.json
python3 -c 'import json,sys; r=json.load(open("g.json")); sys.exit(0 if r["relative_error"] < 1e-5 and len(r["logits"]) == 4 else 1)' ||
  fail "graph logits: $(cat g.json)"
# A precision target for a graph: its scale from measured encrypted runs (nn/measured_precision.h).
"$pfhe" compile --model towers.pfhm --out-dir gprec --budget-gb 0.1 --precision-bits 16 2> gprec.txt
grep -Eq "scale 2\^3[0-9]: (1[7-9]|2[0-9])\.[0-9] bits measured" gprec.txt ||
  { cat gprec.txt; fail "graph --precision-bits 16: no 30-39 bit scale measured at 17 bits or more"; }
expect_error "alice.cts: .*made for other parameters" "$pfhe" infer --params gsrv/params.pfhe \
  --model gsrv/model.pfhc --eval-keys g.keys --input alice.cts --out x.ct
expect_error "classifier" "$pfhe" match --params gsrv/params.pfhe --model gsrv/model.pfhc --eval-keys g.keys \
  --input g.seq.ct --out x --store store --name alice --threshold 0.5
echo "cli flow: all checks passed"
