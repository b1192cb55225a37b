#!/usr/bin/env bash
# Every test, in two passes (make test runs this under scripts/start-postgres.sh):
#   1. all but the `serial` ones, spread over FLOODWAY_TEST_WORKERS (default 2) pytest-xdist
#      workers: most tests wait on loopback HTTP, rate limits and worker processes, not the CPU;
#   2. the `serial` ones, alone: they freeze worker processes with SIGSTOP past leases of a few
#      seconds (a loaded machine stretches what those seconds hold), restart the shared
#      PostgreSQL server (which would cut every other test's connections), or race a process's
#      start against a kill.
# Arguments go to both passes (e.g. a path, or -x). A pass with nothing to run is not a failure.
set -u
cd "$(dirname "$0")/.."
PY=${FLOODWAY_TEST_PYTHON:-.venv/bin/python}
"$PY" -m pytest -n "${FLOODWAY_TEST_WORKERS:-2}" -m "not serial" "$@"
parallel=$?
"$PY" -m pytest -m serial "$@"
alone=$?
[ "$parallel" -eq 5 ] && parallel=0  # (5: pytest collected nothing)
[ "$alone" -eq 5 ] && alone=0
if [ "$parallel" -ne 0 ]; then exit "$parallel"; fi
exit "$alone"
