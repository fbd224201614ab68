"""Autobahn|Testsuite's fuzzingclient (RFC 6455) against the template's WebSocket code.

    make autobahn     (or: .venv/bin/python bench/autobahn/run.py --wstest PATH)

Starts bench/autobahn/echo_server.py on a free port, runs every case but the
excluded ones, prints a summary per result and the cases that are not OK, and
writes the HTML report to bench/autobahn/reports/ (not committed). Exits 1 if a
case FAILED. Outside CI: wstest is Python 2 code (see the Makefile target).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# 12.x and 13.x test permessage-deflate, which this code never negotiates (the async
# library's server does). 9.x (messages up to 16 MiB, 4 MiB in fragments of 64 bytes)
# run: MAX_SIZE in echo_server.py is theirs.
EXCLUDED = ["12.*", "13.*"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--wstest", default="/tmp/autobahn-venv/bin/wstest")
    parser.add_argument("--cases", default="*", help="e.g. 5.*,7.7.*")
    parser.add_argument("--mode", default="eventlet", choices=["eventlet", "gevent"])
    args = parser.parse_args()
    port = free_port()
    reports = HERE / "reports"
    server = subprocess.Popen([sys.executable, str(HERE / "echo_server.py"), str(port),
                               args.mode],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        server.stdout.readline()  # "echo server on ..." once it listens
        spec = {"outdir": str(reports), "servers": [
            {"agent": "template", "url": f"ws://127.0.0.1:{port}"}],
            "cases": args.cases.split(","), "exclude-cases": EXCLUDED,
            "exclude-agent-cases": {}}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
            json.dump(spec, file)
        started = time.monotonic()
        subprocess.run([args.wstest, "-m", "fuzzingclient", "-s", file.name], check=True,
                       cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL)
        elapsed = time.monotonic() - started
    finally:
        server.kill()
        server.wait(10)
    results = json.loads((reports / "index.json").read_text())["template"]
    counts = collections.Counter()
    for case in sorted(results, key=lambda c: [int(n) for n in c.split(".")]):
        result = results[case]
        behavior, close = result["behavior"], result["behaviorClose"]
        counts[behavior] += 1
        if behavior != "OK" or close not in ("OK", "INFORMATIONAL"):
            print(f"{case:10} {behavior:14} close: {close}")
    print(f"{args.mode}: {len(results)} cases in {elapsed:.0f} s (excluded: {', '.join(EXCLUDED)}): " +
          ", ".join(f"{n} {behavior}" for behavior, n in counts.most_common()))
    return 1 if counts["FAILED"] else 0


if __name__ == "__main__":
    sys.exit(main())
