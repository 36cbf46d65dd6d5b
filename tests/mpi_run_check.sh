#!/usr/bin/env bash
# mpi_run.sh reruns a job once on Open MPI's PID-0 teardown race and on nothing else:
# fake launchers stand in for mpirun.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
race="mpirun has exited due to process rank 0 with PID 0 on
node vm exiting improperly. There are three reasons this could occur:"
# fake_launcher NAME MESSAGE: fails with MESSAGE on its first call, succeeds on the next.
fake_launcher() {
  printf '#!/usr/bin/env bash\nif [ ! -e %s.ran ]; then touch %s.ran; echo "%s" >&2; exit 1; fi\necho second run\n' \
    "$1" "$1" "$2" > "$1"
  chmod +x "$1"
}
fake_launcher race.sh "$race"
"$here/mpi_run.sh" ./race.sh > out.txt 2>&1 || { cat out.txt; fail "the PID-0 race was not run again"; }
grep -q "running the job once more" out.txt && grep -q "second run" out.txt || { cat out.txt; fail "no rerun note"; }

fake_launcher real.sh "mpirun has exited due to process rank 1 with PID 4242 on
node vm exiting improperly."
if "$here/mpi_run.sh" ./real.sh > out.txt 2>&1; then fail "a rank with a real PID exiting improperly was retried"; fi
grep -q "second run" out.txt && fail "a real failure ran twice"

fake_launcher erred.sh "pfhe: error: model.pfhc: truncated
$race"
if "$here/mpi_run.sh" ./erred.sh > out.txt 2>&1; then fail "a pfhe error was retried"; fi

printf '#!/usr/bin/env bash\necho "$@"\nexit 3\n' > status.sh && chmod +x status.sh
status=0
"$here/mpi_run.sh" ./status.sh a b > out.txt 2>&1 || status=$?
[ "$status" = 3 ] || fail "exit status $status instead of the job's 3"
grep -q "^a b$" out.txt || fail "arguments or output lost: $(cat out.txt)"
echo "mpi_run.sh: all checks passed"
