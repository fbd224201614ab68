#!/usr/bin/env bash
# The whole suite, as `make test` runs it (docs/testing.md): every step runs even when
# an earlier one failed, each says how long it took, and the exit status is non-zero
# when any failed, after a summary of which.
#
#   1. lint (ruff);
#   2. the in-process tier (no server, no Redis: seconds);
#   3. per async mode: the tests against real processes, in parallel test processes
#      (each has its own ports and Redis); the mode-independent ones in the first mode
#      only; then the transport tests again on python-engineio's own transport.
#
# ASYNC_MODE=gevent runs one mode; TEST_PROCESSES sets the parallelism; PYTEST_ARGS is
# added to every pytest run (e.g. PYTEST_ARGS="-x -k recovery").
set -uo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-.venv/bin}
# gevent runs on the newest gunicorn (requirements-gevent.txt), eventlet on 25.x
GEVENT_BIN=${GEVENT_BIN:-$BIN}
MODES=${ASYNC_MODE:-eventlet gevent}
PROCESSES=${TEST_PROCESSES:-4}
# The tests of what ENGINEIO_TRANSPORT=stock changes (the fallback for a library
# version the template's transport was not tested with).
STOCK_TESTS=(tests/transport tests/security/test_protocol.py tests/security/test_floods.py
             tests/sockets/test_chat.py tests/sockets/test_connect_auth.py tests/recovery)
PARALLEL=(-n "$PROCESSES" --dist loadfile)

failed=()
step() {
    local name=$1 started=$SECONDS
    shift
    echo "=== $name"
    "$@"
    local status=$?
    if [ $status -eq 0 ] || [ $status -eq 5 ]; then  # 5: PYTEST_ARGS selected none here
        echo "=== $name: passed in $((SECONDS - started)) s"
    else
        echo "=== $name: FAILED after $((SECONDS - started)) s"
        failed+=("$name")
    fi
}

step "lint" "$BIN/ruff" check .

again=""  # after the first mode: " and not mode_independent"
for mode in $MODES; do
    bin=$BIN
    [ "$mode" = gevent ] && bin=$GEVENT_BIN
    # (parsed as the shell would: PYTEST_ARGS='-k "chat and not flood"' keeps its quotes)
    eval "PYTEST=(\"\$bin/python\" -m pytest ${PYTEST_ARGS:-})"
    echo "=== $mode on gunicorn $("$bin/python" -c 'import gunicorn; print(gunicorn.__version__)')"
    step "in-process tests, $mode" env ASYNC_MODE="$mode" TEST_TIER=in-process \
        "${PYTEST[@]}" -m "not servers$again"
    step "server tests, $mode" env ASYNC_MODE="$mode" \
        "${PYTEST[@]}" "${PARALLEL[@]}" -m "servers$again"
    step "transport tests, $mode, ENGINEIO_TRANSPORT=stock" \
        env ASYNC_MODE="$mode" ENGINEIO_TRANSPORT=stock \
        "${PYTEST[@]}" "${PARALLEL[@]}" "${STOCK_TESTS[@]}"
    again=" and not mode_independent"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "=== FAILED: ${failed[*]}"
    exit 1
fi
echo "=== all passed in $SECONDS s"
