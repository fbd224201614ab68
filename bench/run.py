"""Benchmark the template against the Node Socket.IO reference and bare python-socketio.

    make bench            (or: .venv/bin/python bench/run.py [--quick])

Every figure is measured in this run, for the four servers in turn, with the same
load generator (socket.io-client under Node), and reported as a ratio to the Node
reference. Writes bench/results/results.{json,md,png} and the table in
docs/performance.md. Bounded: fixed counts and timeouts; about 45 minutes with the
default three interleaved rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
sys.path.insert(0, str(ROOT))

from app.core.tokens import TokenService  # noqa: E402
from config.settings import load_settings  # noqa: E402
from tests.helpers import RedisServer, child_pids, free_port  # noqa: E402

TEMPLATE_ENV: dict[str, str] = {}
Token = str | Callable[[], str]  # a JWT, or what issues a fresh one
# the servers measured: Node, Node doing the template's work (recovery, Redis Streams),
# bare python-socketio, the template
KINDS = ("node", "node-recovery", "bare", "template")
JWT_SECRET = "bench-jwt-secret-0123456789abcdefghijklmnopqrstuvwxyz"
# fanout and cross: the clients are split over two load generator processes, so that
# the load generator is not what saturates first (one process is, near 200k deliveries/s)
FULL = {"fanout": dict(clients=1000, rooms=10, senders=10, messages=100, procs=2),
        "rate": dict(clients=1000, rooms=10, senders=100, rate=20_000, seconds=10),
        "idle": dict(clients=5000),
        "storm": dict(clients=2000, concurrency=200),
        "cross": dict(clients=1000, rooms=10, senders=10, messages=50, procs=2),
        # the topology users scale to: 10,000 clients on two workers + Redis, 20
        # messages/s into 10 rooms of 1,000 (20,000 deliveries/s), measured for 10 s
        # after 2 s at that rate (loadgen.js: the load generator's own warm-up). Over
        # three load generator processes: one alone stalled 100-200 ms (its own event
        # loop's lag, measured) and that was what the p99 measured.
        "scale": dict(clients=10_000, rooms=10, senders=10, rate=20_000, seconds=10, warmup=2,
                      procs=3)}
QUICK = {"fanout": dict(clients=100, rooms=5, senders=5, messages=20, procs=2),
         "rate": dict(clients=100, rooms=5, senders=10, rate=1000, seconds=2),
         "idle": dict(clients=200),
         "storm": dict(clients=100, concurrency=50),
         "cross": dict(clients=100, rooms=5, senders=5, messages=20, procs=2),
         "scale": dict(clients=200, rooms=5, senders=5, rate=1000, seconds=2, warmup=0.5,
                       procs=2)}
# Scaling out (routed fan-out): 2, 4 and 8 single-worker instances on one Redis, each
# holding the clients of its own rooms, at one total rate (messages/s into all rooms)
ROUTING_FULL = dict(workers=(2, 4, 8), rooms=8, members=100, messages_per_s=200, seconds=8)
ROUTING_QUICK = dict(workers=(1, 2), rooms=4, members=5, messages_per_s=100, seconds=1)


def process_tree_total(pid: int, read: Callable[[int], float]) -> float:
    """`read(pid)` summed over a process and its children (gunicorn master + workers);
    a process that exits meanwhile counts 0."""
    total = 0
    for p in {pid} | child_pids(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += read(p)
    return total


def rss_kb(pid: int) -> int:
    """Resident memory (KB) of one process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) one process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class Server:
    """One server under test: its processes, URLs, and the protocol the loadgen speaks."""

    def __init__(self, kind: str, workers: int, redis_url: str | None, async_mode: str,
                 env: dict[str, str] | None = None) -> None:
        self.kind, self.workers, self.redis_url = kind, workers, redis_url
        self.env = env or {}  # the template's settings for this server
        self.async_mode = async_mode
        self.processes: list[subprocess.Popen] = []
        self.urls: list[str] = []
        # kept open for the server's lifetime: its processes write to it
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix=f"bench-{kind}-", suffix=".log", delete=False)

    def protocol(self, token: Token) -> dict:
        if self.kind == "template":
            # (a callable: a fresh token per server, since a run outlasts JWT_TTL_SECONDS)
            token = token() if callable(token) else token
            return {"namespace": "/chat", "token": token, "sendEvent": "message",
                    "recvEvent": "message", "extra": {"echo": True}}
        return {"sendEvent": "chat", "recvEvent": "chat"}

    def start(self) -> Server:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        env.update(PYTHONWARNINGS="ignore", ENV_FILE="")
        if self.kind in ("node", "node-recovery"):
            # one Node process per "worker", sharing through the Redis adapter
            for _ in range(self.workers):
                port = free_port()
                self._spawn(["node", "node_server.js"], BENCH,
                            {**env, "PORT": str(port), **({"REDIS_URL": self.redis_url}
                                                          if self.redis_url else {}),
                             **({"RECOVERY": "1"} if self.kind == "node-recovery" else {})})
                self.urls.append(f"http://127.0.0.1:{port}")
            health = "/health"
        else:
            port = free_port()
            self.urls.append(f"http://127.0.0.1:{port}")
            if self.kind == "bare":
                command = [sys.executable, "-m", "gunicorn", "-k", self.async_mode, "-w",
                           str(self.workers), "-b", f"127.0.0.1:{port}", "--worker-connections",
                           "20000", "--no-control-socket", "bench.bare_server:app"]
                if self.workers > 1:
                    command.append("--reuse-port")
                extra = {"ASYNC_MODE": self.async_mode,
                         **({"REDIS_URL": self.redis_url} if self.redis_url else {})}
                health = "/health"
            else:
                command = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py"]
                extra = {"APP_ENV": "testing", "JWT_SECRET": JWT_SECRET, "LOG_LEVEL": "WARNING",
                         "BIND": f"127.0.0.1:{port}", "WORKERS": str(self.workers),
                         "TRANSPORTS": "websocket", "ASYNC_MODE": self.async_mode,
                         "WORKER_CONNECTIONS": "20000",
                         # a load generator is one address sending far above human rates
                         "EVENT_RATE": "1000000", "EVENT_BURST": "1000000",
                         "MAX_CONNECTIONS_PER_ADDRESS": "1000000",
                         # every load generator client is the same user, "bench"
                         "MAX_CONNECTIONS_PER_USER": "1000000",
                         "MESSAGE_QUEUE_URL": self.redis_url or "", **TEMPLATE_ENV,
                         **self.env}
                health = "/api/health"
            self._spawn(command, ROOT, {**env, **extra})
        deadline = time.monotonic() + 30
        for url in self.urls:
            while True:
                try:
                    if requests.get(url + health, timeout=1).ok:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.kind} did not start: {Path(self.log.name).read_text()}")
                time.sleep(0.2)
        time.sleep(1)  # let workers finish booting (subscriptions)
        return self

    def _spawn(self, command, cwd, env) -> None:
        self.processes.append(subprocess.Popen(command, cwd=cwd, env=env, stdout=self.log,
                                               stderr=subprocess.STDOUT,
                                               start_new_session=True))

    def rss_kb(self) -> int:
        return sum(process_tree_total(p.pid, rss_kb) for p in self.processes)

    def cpu_seconds(self) -> float:
        return sum(process_tree_total(p.pid, cpu_seconds) for p in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(process.pid, signal.SIGKILL)


def loadgen(options: dict, server: Server | None = None, timeout: float = 180) -> dict:
    """Run one scenario; with `server`, add the server's CPU seconds spent in it
    (from the clients having joined their rooms to the result)."""
    process = subprocess.Popen(["node", "loadgen.js", json.dumps(options)], cwd=BENCH,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cpu_start, result, idle = None, None, None
    watchdog = threading.Timer(timeout, process.kill)  # bounded even if it hangs
    watchdog.start()
    try:
        for line in process.stdout:
            if line.startswith('{"joined"') and server is not None:
                cpu_start, joined_at = server.cpu_seconds(), time.monotonic()
            elif line.startswith('{"idle_done"') and cpu_start is not None:
                # (options["idleBefore"]: the servers' CPU rate while joined and quiet)
                idle = (server.cpu_seconds() - cpu_start) / (time.monotonic() - joined_at)
                cpu_start, joined_at = server.cpu_seconds(), time.monotonic()
            elif line.startswith("{"):
                result = json.loads(line)
        process.wait(timeout)
    finally:
        watchdog.cancel()
        process.kill()
    if result is None or "error" in result:
        raise RuntimeError(f"loadgen failed: {result} {process.stderr.read()[-500:]}")
    if cpu_start is not None:
        result["server_cpu_s"] = server.cpu_seconds() - cpu_start
        if idle is not None:
            result["server_idle_cpu_share"] = idle
            result["server_cpu_s_over_idle"] = result["server_cpu_s"] - idle * (
                time.monotonic() - joined_at)
    return result


# Seconds the idle connections are held after RSS is first stable, for the settled
# figure: Node's RSS fell from 26 to 14 KB per connection once its GC had run.
SETTLE_SECONDS = 20


def idle_memory(server: Server, options: dict, settle: float = SETTLE_SECONDS) -> dict:
    """RSS growth per idle connection, on a server that has served nothing before.

    Measured first on a fresh process: after other scenarios a runtime's heap has
    grown already and new connections fit in it (one run gave Node 3 KB per
    connection that way, against 12-17 KB fresh). RSS is read once it is stable (the
    first value), and again after `settle` more seconds idle (settled).
    """
    before = server.rss_kb()
    process = subprocess.Popen(["node", "loadgen.js", json.dumps(options)], cwd=BENCH,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if '"ready"' not in line:
        process.kill()
        raise RuntimeError(f"idle loadgen failed: {line}")
    after, deadline = server.rss_kb(), time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(1)
        previous, after = after, server.rss_kb()
        if abs(after - previous) <= 0.005 * after:
            break
    time.sleep(settle)
    settled = server.rss_kb()
    process.stdin.close()
    process.wait(30)
    n = options["clients"]
    return {"connections": n, "rss_before_kb": before, "rss_after_kb": after,
            "kb_per_connection": (after - before) / n,
            "kb_per_connection_settled": (settled - before) / n}


@contextlib.contextmanager
def running(kind: str, workers: int, redis_url: str | None, async_mode: str, token: Token,
            env: dict[str, str] | None = None):
    """A fresh server; yields it and the loadgen options that reach it."""
    server = Server(kind, workers, redis_url, async_mode, env).start()
    try:
        yield server, {"urls": server.urls, **server.protocol(token)}
    finally:
        server.stop()


def measure(kind: str, sizes: dict, token: Token, redis_url: str, redis_pid: int,
            async_mode: str, settle: float) -> dict:
    results = {}
    with running(kind, 1, None, async_mode, token) as (server, base):
        results["idle"] = idle_memory(server, {**base, "scenario": "idle", **sizes["idle"]},
                                      settle)
    with running(kind, 1, None, async_mode, token) as (server, base):
        for scenario in ("fanout", "rate", "storm"):
            results[scenario] = loadgen({**base, "scenario": scenario, **sizes[scenario]},
                                        server)
        # The server's own cost per delivery: what the load generator's ceiling (one
        # core, shared machine) cannot hide.
        fanout = results["fanout"]
        fanout["server_cpu_us_per_delivery"] = (fanout["server_cpu_s"] * 1e6
                                                / max(fanout["received"], 1))
    with running(kind, 2, redis_url, async_mode, token) as (server, base):
        results["cross"] = loadgen({**base, "scenario": "fanout", **sizes["cross"]})
    with running(kind, 2, redis_url, async_mode, token) as (server, base):
        # connects where every worker shares limits and state through Redis: the
        # server's and Redis's own CPU per connect (Redis's from /proc)
        server_cpu, redis_cpu = server.cpu_seconds(), cpu_seconds(redis_pid)
        storm = loadgen({**base, "scenario": "storm", **sizes["storm"]})
        connects = max(storm.get("connected", sizes["storm"]["clients"]), 1)
        storm["server_cpu_us_per_connect"] = (server.cpu_seconds() - server_cpu) * 1e6 / connects
        storm["redis_cpu_us_per_connect"] = (cpu_seconds(redis_pid) - redis_cpu) * 1e6 / connects
        results["storm_redis"] = storm
    if kind == "template":
        # What storing every message in Redis Streams costs: the same cross-worker
        # fanout with history off (the other figures are with it on, the default).
        with running(kind, 2, redis_url, async_mode, token,
                     env={"HISTORY_MAX_LENGTH": "0"}) as (server, base):
            off = loadgen({**base, "scenario": "fanout", **sizes["cross"]})
        results["cross"]["history_off_deliveries_per_s"] = off["deliveries_per_s"]
        results["cross"]["history_cost"] = 1 - (results["cross"]["deliveries_per_s"]
                                                / off["deliveries_per_s"])
    return results


class Instances:
    """Several single-worker template instances, measured as one server (their CPU)."""

    def __init__(self, count: int, redis_url: str, async_mode: str, env: dict[str, str]) -> None:
        self.servers: list[Server] = []
        try:
            for _ in range(count):
                self.servers.append(Server("template", 1, redis_url, async_mode, env).start())
        except BaseException:
            self.stop()
            raise

    def cpu_seconds(self) -> float:
        return sum(server.cpu_seconds() for server in self.servers)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def routing_scale(sizes: dict, token: Token, redis_url: str, async_mode: str) -> dict:
    """Server CPU per delivered message as instances are added, with routed fan-out
    and with every message on one channel (MESSAGE_QUEUE_ROUTING=false). Client i is
    in room i % rooms on instance i % instances: every room's members are on one
    instance, and each instance holds rooms / instances of them. The total rate stays
    the same, so each instance delivers a smaller share: what it spends on the other
    instances' messages shows as a growing cost per delivery."""
    rooms, members = sizes["rooms"], sizes["members"]
    results: dict[str, dict] = {}
    fewest, most = min(sizes["workers"]), max(sizes["workers"])
    # and the most instances with every room on the fewest of them: what an instance
    # that holds none of a room's members spends on its messages, alone
    runs = [(count, count) for count in sizes["workers"]] + [(most, fewest)]
    for routing in ("true", "false"):
        rows = {}
        for count, holding in runs:
            group = Instances(count, redis_url, async_mode, {"MESSAGE_QUEUE_ROUTING": routing})
            try:
                options = {"urls": [server.urls[0] for server in group.servers[:holding]],
                           **group.servers[0].protocol(token), "scenario": "rate",
                           "clients": rooms * members, "rooms": rooms, "senders": rooms,
                           "rate": sizes["messages_per_s"] * members,
                           "seconds": sizes["seconds"], "warmup": 0, "idleBefore": 3}
                result = loadgen(options, group)
            finally:
                group.stop()
            # the work the messages cost, above what the instances spend idle (their
            # heartbeats and pings, which grow with their count whatever the traffic)
            result["server_cpu_us_per_delivery"] = (result["server_cpu_s_over_idle"] * 1e6
                                                    / max(result["received"], 1))
            result["server_cpu_us_per_delivery_with_idle"] = (result["server_cpu_s"] * 1e6
                                                              / max(result["received"], 1))
            rows[str(count) if holding == count else f"{count}, rooms on {holding}"] = result
        results["routed" if routing == "true" else "one_channel"] = rows
    return results


def routing_lines(scale: dict) -> str:
    def row(rows: dict) -> str:
        first = next(iter(rows.values()))["server_cpu_us_per_delivery"]
        return ", ".join(f"{n} instances {r['server_cpu_us_per_delivery']:.1f} µs "
                         f"({r['server_cpu_us_per_delivery'] / first:.2f}x; "
                         f"{r['server_cpu_us_per_delivery_with_idle']:.1f} µs with the idle "
                         f"CPU, lost {r['lost']})" for n, r in rows.items())
    return ("Scaling out, server CPU per delivered message (all instances' CPU over the "
            "deliveries, less their CPU while idle with the clients joined; single-worker "
            "instances on one Redis, each holding its own rooms, one total rate): routed "
            "fan-out " + row(scale["routed"])
            + "; one channel read by every worker (MESSAGE_QUEUE_ROUTING=false) "
            + row(scale["one_channel"]) + ".")


def median_round(rounds: list[dict]) -> dict:
    """One kind's rounds of `measure` -> per scenario, the median of each figure (the
    worst for `lost`; None, a latency of a round that got nothing, counts as the worst;
    of an even count, the lower middle one: a real round's value), each round's own
    figures under `rounds`."""
    merged = {}
    for scenario in rounds[0]:
        rows = [r[scenario] for r in rounds]
        out = {}
        for key, value in rows[0].items():
            values = [row.get(key) for row in rows]
            numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
            if numbers and len(numbers) + values.count(None) == len(values):
                if key == "lost":
                    out[key] = max(numbers)
                elif None in values:  # (a latency: higher is worse)
                    ranked = sorted(numbers) + [None] * values.count(None)
                    out[key] = ranked[(len(ranked) - 1) // 2]
                else:
                    out[key] = statistics.median_low(numbers)
            else:
                out[key] = value
        out["rounds"] = [{k: v for k, v in row.items() if isinstance(v, int | float)}
                         for row in rows]
        merged[scenario] = out
    return merged


def scale_rounds(kinds, sizes: dict, token: Token, redis_url: str, async_mode: str,
                 rounds: int) -> dict:
    """The 10k-client scenario in interleaved rounds (node, bare, template, node, ...),
    each kind's median round reported: a single 10 s window on a 2-core machine, where
    the load generator shares the cores with the servers, moved its p99 by up to 2x
    from one run to the next (a load generator stall), and interleaving spreads slow
    moments of the machine over every kind alike."""
    runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for _ in range(rounds):
        for kind in kinds:
            with running(kind, 2, redis_url, async_mode, token) as (_, base):
                runs[kind].append(loadgen({**base, "scenario": "rate", **sizes["scale"]},
                                          timeout=300))
    results = {}
    for kind, rows in runs.items():
        # the round with the median p99 (its p50 and loss with it: one real run; of an
        # even count, the worse middle one). A round that lost everything has no p99: last.
        median = sorted(rows, key=lambda r: (r["p99_ms"] is None, r["p99_ms"] or 0))[len(rows) // 2]
        results[kind] = {**median, "rounds": [{k: r[k] for k in
                                               ("p50_ms", "p99_ms", "lost", "loadgen_lag_p99_ms",
                                                "loadgen_lag_max_ms", "loadgen_lag_ms_per_process")
                                               if k in r} for r in rows]}
    return results


# (scenario, metric, label, higher is better)
METRICS = [("fanout", "deliveries_per_s", "fanout deliveries/s", True),
           ("fanout", "server_cpu_us_per_delivery", "fanout server CPU µs/delivery", False),
           ("fanout", "p99_ms", "fanout p99 ms", False),
           ("rate", "p50_ms", "steady-rate p50 ms", False),
           ("rate", "p99_ms", "steady-rate p99 ms", False),
           ("rate", "max_ms", "steady-rate max ms", False),
           ("idle", "kb_per_connection", "idle KB/connection", False),
           ("idle", "kb_per_connection_settled", "idle KB/connection, settled (held 20 s more)",
            False),
           ("storm", "connections_per_s", "connect storm conn/s", True),
           ("storm_redis", "connections_per_s", "connect storm, 2 workers + Redis: conn/s", True),
           ("storm_redis", "server_cpu_us_per_connect",
            "connect storm, 2 workers + Redis: server CPU µs/connect", False),
           ("storm_redis", "redis_cpu_us_per_connect",
            "connect storm, 2 workers + Redis: Redis CPU µs/connect", False),
           ("cross", "deliveries_per_s", "2 workers + Redis deliveries/s", True),
           ("cross", "lost", "2 workers + Redis lost", False),
           ("scale", "p50_ms", "10k clients, 2 workers + Redis: p50 ms", False),
           ("scale", "p99_ms", "10k clients, 2 workers + Redis: p99 ms", False),
           ("scale", "lost", "10k clients, 2 workers + Redis: lost", False)]


def _ms(value) -> str:
    return "none" if value is None else f"{value:.1f}"


def ratio(a, b):
    return None if a is None or not b else a / b


def table(results: dict) -> str:
    """Medians of the rounds; "Node + recovery" is Node doing the template's work per
    message (node_server.js RECOVERY=1: connection-state recovery, and with Redis the
    Redis Streams adapter), the issue's reference."""
    rows = ["| metric | Node | Node + recovery | bare python-socketio | template | "
            "template / Node + recovery | template / Node | template / bare |",
            "|---|---|---|---|---|---|---|---|"]
    for scenario, metric, label, _ in METRICS:
        values = [results[k][scenario].get(metric) for k in KINDS]
        cells = [f"{v:,.1f}" if isinstance(v, float) else str(v) for v in values]
        ratios = [ratio(values[3], values[i]) for i in (1, 0, 2)]
        rows.append(f"| {label} | {' | '.join(cells)} | "
                    + " | ".join("" if r is None else f"{r:.2f}x" for r in ratios) + " |")
    return "\n".join(rows)


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, recovery, node, bare = [], [], [], []
    for scenario, metric, label, higher in METRICS:
        if metric == "lost":
            continue
        t = results["template"][scenario].get(metric)
        r, n, b = (results[k][scenario].get(metric) for k in ("node-recovery", "node", "bare"))
        if not (t and r and n and b):
            continue
        labels.append(label + (" (higher better)" if higher else " (lower better)"))
        recovery.append(t / r)
        node.append(t / n)
        bare.append(t / b)
    fig, ax = plt.subplots(figsize=(9, 6))
    y = range(len(labels))
    ax.barh([i + 0.27 for i in y], recovery, height=0.27, label="template / Node + recovery")
    ax.barh(list(y), node, height=0.27, label="template / Node")
    ax.barh([i - 0.27 for i in y], bare, height=0.27, label="template / bare python-socketio")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(list(y), labels)
    ax.set_xlabel("ratio (measured in the same run)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"Node {node}, {platform.system()} {platform.release()}")


def update_docs(markdown: str, section: str = "bench") -> None:
    doc = ROOT / "docs" / "performance.md"
    text = doc.read_text()
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    text = re.sub(f"{start}.*{end}", f"{start}\n{markdown}\n{end}", text, flags=re.S)
    doc.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--async-mode", default=os.environ.get("ASYNC_MODE", "eventlet"))
    parser.add_argument("--template-env", action="append", default=[],
                        help="NAME=VALUE for the template server (to measure a setting)")
    parser.add_argument("--routing-only", action="store_true",
                        help="only the scale-out scenario of routed fan-out")
    parser.add_argument("--rounds", "--scale-rounds", dest="rounds", type=int, default=None,
                        help="interleaved rounds of every scenario (default 3; 1 with --quick)")
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    TEMPLATE_ENV.update(item.split("=", 1) for item in args.template_env)
    sizes = QUICK if args.quick else FULL
    if not (BENCH / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH, check=True)
    settings = load_settings(environ={"JWT_SECRET": JWT_SECRET}, env_file="")
    tokens = TokenService(settings)

    def token() -> str:  # issued per server: a run of three rounds outlasts one token
        return tokens.issue("bench", "bench", "user")
    redis = RedisServer().start()
    started = time.monotonic()
    routing_sizes = ROUTING_QUICK if args.quick else ROUTING_FULL
    if args.routing_only:
        try:
            routing = routing_scale(routing_sizes, token, redis.url, args.async_mode)
        finally:
            redis.cleanup()
        out = RESULTS / "quick" if args.quick else RESULTS
        out.mkdir(parents=True, exist_ok=True)
        (out / "routing.json").write_text(json.dumps(routing, indent=2))
        if not args.quick:
            update_docs(routing_lines(routing), "routing")
        print(routing_lines(routing))
        return
    try:
        routing = routing_scale(routing_sizes, token, redis.url, args.async_mode)
        # interleaved (node, node-recovery, bare, template, node, ...): a slow moment of
        # the shared machine falls on every server alike
        rounds: dict[str, list[dict]] = {kind: [] for kind in KINDS}
        for _ in range(args.rounds):
            for kind in KINDS:
                rounds[kind].append(measure(kind, sizes, token, redis.url, redis.process.pid,
                                            args.async_mode, 1 if args.quick else SETTLE_SECONDS))
        results = {kind: median_round(rows) for kind, rows in rounds.items()}
        scale = scale_rounds(KINDS, sizes, token, redis.url, args.async_mode, args.rounds)
        for kind in KINDS:
            results[kind]["scale"] = scale[kind]
    finally:
        redis.cleanup()
    # a quick (smoke) run never replaces the committed full results
    out = RESULTS / "quick" if args.quick else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine(), "async_mode": args.async_mode, "sizes": sizes,
            "rounds": args.rounds,
            "template_env": TEMPLATE_ENV,
            "quick": args.quick, "seconds": round(time.monotonic() - started, 1),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results,
                                                  "routing": routing}, indent=2))
    cross = results["template"]["cross"]
    history = (f"History (Redis Streams) on, the default: 2 workers + Redis fanout "
               f"{cross['deliveries_per_s']:,.0f} deliveries/s against "
               f"{cross['history_off_deliveries_per_s']:,.0f} with HISTORY_MAX_LENGTH=0 "
               f"(cost {cross['history_cost']:.0%}).")
    markdown = (f"Run {meta['date']} on {meta['machine']}; async mode {args.async_mode}; "
                f"{meta['seconds']} s. {args.rounds} interleaved round(s) per server and "
                "scenario, the medians in the table (lost: the worst round; the 10k-client "
                "scenario: its median round by p99). Node + recovery: Node with "
                "connection-state recovery (and the Redis Streams adapter with Redis), every "
                "broadcast carrying its offset in the template's message shape.\n\n"
                f"{table(results)}\n\n{history}\n\n"
                f"Load generator CPU share (fanout, average per process of one core): "
                + ", ".join(f"{k} {results[k]['fanout']['loadgen_cpu_share']:.0%}"
                            for k in results)
                + f"\n\n10k-client scenario, over {sizes['scale']['procs']} load generator "
                "processes; p99 of each round: "
                + ", ".join(f"{k} " + " / ".join(_ms(r['p99_ms']) for r in results[k]['scale']['rounds'])
                            for k in results)
                + " ms.\n\nLoad generator's own event-loop lag in the 10k-client scenario (median "
                "round), p99 / max of each process (a stall there delays every latency it "
                "measures): "
                + ", ".join(f"{k} " + ", ".join(f"{p99:.0f} / {most:.0f}" for p99, most in
                                                 results[k]['scale'].get(
                                                     'loadgen_lag_ms_per_process', []))
                            + " ms" for k in results)
                + "\n\n![ratios](../bench/results/results.png)")
    (out / "results.md").write_text(markdown + "\n")
    plot(results, out / "results.png")
    if not args.quick:
        update_docs(markdown)
        update_docs(routing_lines(routing), "routing")
    print(markdown + "\n\n" + routing_lines(routing))


if __name__ == "__main__":
    shutil.which("node") or sys.exit("bench needs Node.js (and npm) on PATH")
    main()
