#!/usr/bin/env bash
# mpi_run.sh MPIRUN ARGS...: run an MPI job for a test, tolerating one known teardown race
# of Open MPI 4.x, and nothing else.
#
# Open MPI 4.x's mpirun now and then reports a rank that finished normally as "rank R
# with PID 0 ... exiting improperly" (open-mpi/ompi#7833, #9389, #12607: a race in the
# runtime's exit bookkeeping, seen with hello-world programs, not fixed on 4.x; Debian 12
# ships 4.1.4). Session 36 met it once in cli_flow, after `pfhe infer --executor mpi` had
# written its output, and not in 12 runs in a row of the same command alone (session 37).
# A rank that really exits without MPI_Finalize or aborts reports its real PID, and pfhe
# prints its own "pfhe: error" first. So when, and only when, the failed job's output has
# that PID-0 signature and no pfhe error, the job runs once more and that second run's
# status counts. The callers still compare the job's output with the other executors'.
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$@" > "$log" 2>&1
status=$?
cat "$log" >&2
if [ "$status" -ne 0 ] && grep -q "with PID 0 on" "$log" && grep -q "exiting improperly" "$log" &&
  ! grep -q "pfhe: error" "$log"; then
  echo "mpi_run.sh: Open MPI's PID-0 teardown race (open-mpi/ompi#7833); running the job once more" >&2
  "$@"
  status=$?
fi
exit "$status"
