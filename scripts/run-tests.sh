#!/usr/bin/env bash
# Every test, in two parts: the tests that may share the machine on TEST_WORKERS workers (a test
# file each at a time, so module fixtures start once), then those marked `serial` alone (they
# check engine-wide state or time how soon a container runs again, which others' load would
# disturb). TEST_WORKERS=0: one process for all. Arguments go to pytest (both parts); a part
# that selects no test is not a failure.
set -uo pipefail
py=${PYTHON:-.venv/bin/python}
workers=${TEST_WORKERS:-2}

part() {
    "$py" -m pytest "$@"
    local rc=$?
    [ "$rc" = 5 ] && rc=0 # no tests collected in this part
    return "$rc"
}

if [ "$workers" = 0 ]; then
    exec "$py" -m pytest --durations=25 "$@"
fi
part -n "$workers" --dist loadfile -m "not serial" --durations=25 "$@" || exit
part -m serial --durations=10 "$@"
