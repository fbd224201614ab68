#!/usr/bin/env bash
# The test suite starts its own redis-server processes on free ports: make sure the
# binary exists. Installs Debian's package when missing and allowed (root), else says how.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "redis-server not found: installing Debian's redis-server package" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    exit 0
fi
echo "redis-server is needed by the tests: install it (e.g. sudo apt-get install redis-server," >&2
echo "or brew install redis) and run again." >&2
exit 1
