#!/usr/bin/env bash
# Every test, in two parts: the tests that may share the machine on TEST_WORKERS workers (a test
# file each at a time, so module fixtures start once), then those marked `serial` alone (they
# check engine-wide state or time how soon a container runs again, which others' load would
# disturb). Arguments go to pytest. One process for all with TEST_WORKERS=0, or when the
# arguments choose markers themselves (-m). The serial part runs even when the first failed;
# the run fails if either did, or if neither collected a test.
set -uo pipefail
py=${PYTHON:-.venv/bin/python}
workers=${TEST_WORKERS:-2}

for arg in "$@"; do
    case $arg in -m*) workers=0 ;; esac
done
if [ "$workers" = 0 ]; then
    exec "$py" -m pytest --durations=25 "$@"
fi

"$py" -m pytest -n "$workers" --dist loadfile -m "not serial" --durations=25 "$@"
parallel=$?
"$py" -m pytest -m serial --durations=10 "$@"
serial=$?

# 5: the part collected no test (the arguments chose none of its kind).
if [ "$parallel" = 5 ] && [ "$serial" = 5 ]; then exit 5; fi
[ "$parallel" = 5 ] && parallel=0
[ "$serial" = 5 ] && serial=0
if [ "$parallel" != 0 ]; then exit "$parallel"; fi
exit "$serial"
