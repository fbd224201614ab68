"""Real things for the tests: a private redis-server, gunicorn processes, clients.

Everything listens on a free loopback port chosen at start, and is stopped by the
fixture that started it; nothing here touches the shared Redis on 6379.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import multiprocessing
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import engineio
import pytest
import redis
import requests
import socketio
import websocket
from prometheus_client.parser import text_string_to_metric_families
from redis.crc import key_slot

ROOT = Path(__file__).resolve().parents[1]
TEST_JWT_SECRET = "test-jwt-secret-0123456789abcdefghijklmnopqrstuvwxyz"
ASYNC_MODE = os.environ.get("ASYNC_MODE", "eventlet")
# The Engine.IO transport the servers run (ENGINEIO_TRANSPORT, app/transport): `make
# test` runs the transport, protocol and socket tests under `stock` too.
ENGINEIO_TRANSPORT = os.environ.get("ENGINEIO_TRANSPORT", "template")
STOCK = ENGINEIO_TRANSPORT == "stock"
STARTUP_TIMEOUT = 30.0
# How long an assertion waits for something asynchronous to happen (not a speed
# requirement: a passing run returns as soon as the condition holds).
WAIT = 10.0
# Send outcomes a client retries with the same client_id (docs/events.md, "Acks").
RETRIED_CODES = {"queue_unavailable", "delivery_incomplete"}
# The official socket.io-client and server for Node (bench/package.json).
NODE_MODULES = ROOT / "bench" / "node_modules"


def refuse_in_process_tier(what: str) -> None:
    """`make test`'s first tier (TEST_TIER=in-process) starts no process: a test that
    does without being marked `servers` (tests/conftest.py) fails instead of slowing it."""
    if os.environ.get("TEST_TIER") == "in-process":
        raise RuntimeError(f"{what} started in the in-process tier: mark the test "
                           "`pytest.mark.servers` (or use a server fixture)")


def template_transport_only(why: str):
    """Marks a test of what only the template's transport does: skipped under stock."""
    return pytest.mark.skipif(STOCK, reason=f"the template's transport only: {why}")


def stock_deviation(deviation: str, async_mode: str | None = None, run: bool = True):
    """Marks a test python-engineio's own transport fails by `deviation` (what the
    template's fixes), in every async mode or in `async_mode`: expected to fail under
    stock. `run=False`: not even run there (its failure is a long timeout)."""
    applies = STOCK and async_mode in (None, ASYNC_MODE)
    return pytest.mark.xfail(applies, reason=f"python-engineio as released: {deviation}",
                             strict=False, run=run)


# Ports for the servers a test process starts: a block of its own per pytest-xdist
# process (gw0, gw1, ...), taken in turn, below Linux's ephemeral range (32768 and up).
# The kernel's "any free port" could hand two parallel processes the same one between
# the check here and the server's own bind.
PORT_BLOCK = 1000
_next_port = itertools.count()


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False  # in use (or its last server's connections are closing)
        return True


# TEST_PORT_BASE: another suite running on the same machine at once takes another base,
# 32000 (their checks here race otherwise): 12 blocks above it, plus 10000 for a Redis
# Cluster node's bus, stay under 65536.
PORT_BASE = int(os.environ.get("TEST_PORT_BASE", "20000"))


def free_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    base = PORT_BASE + PORT_BLOCK * (int(worker) % 12 if worker.isdigit() else 0)
    for _ in range(PORT_BLOCK):
        port = base + next(_next_port) % PORT_BLOCK
        if _bindable(port):
            return port
    raise RuntimeError(f"no free port in {base}-{base + PORT_BLOCK - 1}")


def wait_for(condition: Callable[[], Any], timeout: float = WAIT, interval: float = 0.02,
             message: str | Callable[[], str] = "condition",
             sleep: Callable[[float], Any] = time.sleep) -> Any:
    """`message` may be a function: what it says is read at the timeout (the state).
    `sleep`: an async library's, where the condition needs its event loop to run."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout}s waiting for {text}")
        sleep(interval)


def chat_connections(url: str, admin_token: str, workers: int) -> dict[int, int]:
    """chat_connections_per_worker from a new /admin client at `url`, once `workers`
    workers answer (a respawned one too, after a Redis outage as well)."""
    def connected():
        try:
            return Client().connect(url, ["/admin"], auth={"token": admin_token})
        except socketio.exceptions.ConnectionError:
            # the kernel may hand the connection to a worker respawned a moment ago,
            # still booting (after a kill): a client tries again, as real ones do
            return None

    admin = wait_for(connected, interval=0.2, message="an /admin client to connect")
    try:
        return chat_connections_per_worker(admin, workers)
    finally:
        admin.close()


def install_node_modules() -> Path:
    """bench/node_modules, with the official socket.io-client (npm ci on first use);
    skips the test when Node.js is not installed."""
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed")
    if not (NODE_MODULES / "socket.io-client").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=ROOT / "bench",
                       check=True, timeout=600)
    return NODE_MODULES


def raw_websocket(server, query: str = "", sockopt=()) -> websocket.WebSocket:
    """A raw Engine.IO WebSocket, its OPEN packet read (as `ws.engineio_open`)."""
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket{query}",
        timeout=10, sockopt=sockopt)
    opened = ws.recv()
    assert opened.startswith("0{")  # Engine.IO open packet
    ws.engineio_open = json.loads(opened[1:])
    return ws


def upgrade_by_hand(server, query: str = "EIO=4&transport=websocket") -> tuple[socket.socket, bytes, bytes]:
    """A WebSocket upgrade request written by hand: the socket, the server's status
    line, and what the server sent after its headers (the first frames, if any)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /socket.io/?{query} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                 f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        assert chunk, f"no answer to the upgrade: {response!r}"
        response += chunk
    head, rest = response.split(b"\r\n\r\n", 1)
    return sock, head.split(b"\r\n", 1)[0], rest


def connected_raw(server, token: str, sockopt=()) -> websocket.WebSocket:
    """A raw Engine.IO WebSocket connected to /chat with `token`."""
    ws = raw_websocket(server, sockopt=sockopt)
    ws.send("40/chat," + json.dumps({"token": token}))
    assert ws.recv().startswith("40/chat,")
    return ws


def send_poll(server, url: str) -> socket.socket:
    """A long-polling GET on `url` (a session's), waiting on the server when this
    returns: the server has read it (its side of the connection has nothing unread, in
    /proc/net/tcp), and a green thread handles a poll without a pause until it waits.
    `poll_answer` reads its (status, body)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(f"GET {url[len(server.url):]} HTTP/1.0\r\n\r\n".encode())
    client_port = sock.getsockname()[1]

    def unread() -> int | None:  # the server side's receive queue
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if (int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)) == (
                    server.port, client_port):
                return int(fields[4].split(":")[1], 16)
        return None

    wait_for(lambda: unread() == 0, message="the server to read the poll")
    return sock


def poll_answer(sock: socket.socket) -> tuple[int, str]:
    response = b""
    with sock:
        while chunk := sock.recv(4096):
            response += chunk
    head, body = response.decode().split("\r\n\r\n", 1)
    return int(head.split(" ", 2)[1]), body


def assert_closed(ws: websocket.WebSocket, timeout: float = 5) -> None:
    """The server ends the connection: an empty read or a closed error, not a timeout."""
    ws.settimeout(timeout)
    try:
        while ws.recv():
            pass
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        pass


def close_code(ws: websocket.WebSocket) -> int | None:
    """Read up to the server's close frame: its code (None: the connection just ended)."""
    ws.settimeout(5)
    while True:
        try:
            opcode, frame = ws.recv_data_frame(control_frame=True)
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            return None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(frame.data[:2], "big") if frame.data else None


def worker_rss_kb(server) -> int:
    """The resident memory of the server's workers, summed (kB, from /proc)."""
    total = 0
    for pid in server.worker_pids():
        status = Path(f"/proc/{pid}/status").read_text()
        total += int(status.split("VmRSS:")[1].split()[0])
    return total


def _ack_loop(port: int, token: str, room: str, pipe) -> None:
    """AckProbe's process: join `room` on /chat again and again, timing each ack."""
    latencies: list[float] = []
    try:
        ws = connected_raw(SimpleNamespace(port=port), token)
        ws.settimeout(AckProbe.STALL)
        n = 0
        while not pipe.poll():
            if n == 1:
                pipe.send("ready")  # connected, and one ack answered
            n += 1
            started = time.perf_counter()
            ws.send(f'42/chat,{n}["join",{{"room":"{room}"}}]')
            while not (frame := ws.recv()).startswith(f"43/chat,{n}["):
                if frame == "2":  # an Engine.IO ping: answered, or the session ends
                    ws.send("3")
            latencies.append(time.perf_counter() - started)
        pipe.send(latencies)
    except websocket.WebSocketTimeoutException:
        pipe.send(f"no ack for {AckProbe.STALL}s after {len(latencies)}: the worker is stuck")
    except BaseException:  # the parent reports it
        pipe.send(traceback.format_exc())


class AckProbe:
    """A second client that keeps sending an event with an ack (`join`) and times
    each answer, while a test attacks the same worker:

        with AckProbe(server, token) as probe:
            ...  # the attack
        probe.assert_fast()

    It runs in a process of its own: the test's threads (a flood, hypothesis, a
    reference parser) must not delay it through the GIL, or the measure would be the
    test's, not the server's.
    """

    STALL = 5.0  # no ack for this long: the worker is stuck, the probe gives up

    def __init__(self, server, token: str, room: str = "calm") -> None:
        context = multiprocessing.get_context("spawn")  # no copy of the test's threads
        self.pipe, child = context.Pipe()
        self.process = context.Process(target=_ack_loop, args=(server.port, token, room, child),
                                       daemon=True)
        self.latencies: list[float] = []

    def _receive(self, timeout: float, what: str):
        if not self.pipe.poll(timeout):
            raise AssertionError(f"the ack probe did not report {what} within {timeout}s")
        message = self.pipe.recv()
        if isinstance(message, str) and message != "ready":
            raise AssertionError(f"the ack probe failed:\n{message}")
        return message

    def __enter__(self) -> AckProbe:
        self.process.start()
        self._receive(STARTUP_TIMEOUT, "its first ack")
        return self

    def __exit__(self, error_type, *exc_info) -> None:
        try:
            self.pipe.send("stop")
            self.latencies = self._receive(self.STALL + WAIT, "its acks")
        except AssertionError:
            if error_type is None:  # else the test's own failure says more
                raise
        finally:
            self.process.join(WAIT)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(WAIT)

    def assert_fast(self, p99: float = 0.5, longest: float = 2.0, at_least: int = 100) -> str:
        """p99 of the acks under `p99` seconds and none over `longest`; a summary.

        Bounds for a busy machine: parallel test processes and two CPU-bound ones
        beside them put a ping flood's p99 at 99 ms here (its median under 1 ms), and a
        fresh-clone run with more test processes beside it at 252 ms (max 526 ms), past
        the 250 ms this allowed before. A worker the attack freezes or starves answers
        in seconds, or not at all (STALL)."""
        latencies = sorted(self.latencies)
        assert latencies, "no ack measured"
        measured = latencies[int(len(latencies) * 0.99)]
        summary = (f"ack p99 {measured * 1000:.1f} ms, max {latencies[-1] * 1000:.0f} ms "
                   f"over {len(latencies)} acks")
        assert len(latencies) >= at_least and measured < p99 and latencies[-1] < longest, summary
        return summary


SERVER_OPCODES = (0x1, 0x2, 0x8, 0x9, 0xA)  # text, binary, close, ping, pong


def parse_server_frames(data: bytes | bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """The whole frames at the start of what a server wrote: [(opcode, payload)] and
    the bytes they take. Strict: anything but a whole, unmasked frame without reserved
    bits (an HTTP response written into the WebSocket, a frame cut into by another)
    fails here. (The template's server never fragments, so FIN is always set.)"""
    frames, at = [], 0
    while len(data) - at >= 2:
        first, second = data[at], data[at + 1]
        assert first & 0xF0 == 0x80 and first & 0x0F in SERVER_OPCODES and not second & 0x80, \
            f"not a server frame at byte {at}: {bytes(data[at:at + 40])!r}"
        length, header = second, 2
        if length == 126:
            length, header = int.from_bytes(data[at + 2:at + 4], "big"), 4
        elif length == 127:
            length, header = int.from_bytes(data[at + 2:at + 10], "big"), 10
        if len(data) - at < header or len(data) - at < header + length:
            break  # the rest has not arrived yet
        assert first & 0x08 == 0 or length <= 125, f"a control frame of {length} bytes"
        frames.append((first & 0x0F, bytes(data[at + header:at + header + length])))
        at += header + length
    return frames, at


def read_server_frames(sock: socket.socket) -> list[tuple[int, bytes]]:
    """Every frame the server writes until it closes the TCP connection, parsed strictly."""
    data = bytearray()
    sock.settimeout(10)
    while chunk := sock.recv(1 << 20):
        data += chunk
    frames, used = parse_server_frames(data)
    assert used == len(data), f"the last frame is cut: {bytes(data[used:used + 40])!r}"
    return frames


def child_pids(pid: int) -> set[int]:
    """The children of a process (gunicorn's workers of a master), from Linux /proc."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            children.add(int(stat.parent.name))
    return children


def worker_sockets(server) -> int:
    """Open sockets of a server's workers (its connections, and its listeners), from
    Linux /proc: a connection the server cut is gone from here, whatever the peer does."""
    count = 0
    for pid in server.worker_pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:  # that worker exited since
            continue
        for fd in fds:
            with contextlib.suppress(FileNotFoundError):  # closed since the listing
                count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


def chat_connections_per_worker(admin: Client, workers: int | None = None) -> dict[int, int]:
    """{worker pid: /chat connections}, from /admin stats: every worker must answer, or
    with `workers`, it waits until that many do."""
    if workers is None:
        stats = admin.call("stats", {}, namespace="/admin")
        assert stats["errors"] == []
    else:
        def answered():
            stats = admin.call("stats", {}, namespace="/admin")
            return not stats["errors"] and len(stats["workers"]) == workers and stats
        stats = wait_for(answered, interval=0.2, message=f"{workers} workers' stats")
    return {worker["pid"]: worker["connections"].get("/chat", 0) for worker in stats["workers"]}


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted label pairs): value} of a Prometheus text exposition."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape_metrics(server) -> dict[tuple[str, tuple], float]:
    """GET /metrics on a new connection (with several workers, any may answer)."""
    response = requests.get(server.url + "/metrics", timeout=5, headers={"Connection": "close"})
    assert response.status_code == 200, response.text
    return metric_samples(response.text)


def metric(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def process_environment(**overrides: str) -> dict[str, str]:
    """The environment of a server or CLI process: only what the test chose."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    env.update({
        "ENV_FILE": "",  # a developer's .env must not change the tests
        "APP_ENV": "testing",
        "JWT_SECRET": TEST_JWT_SECRET,
        "ASYNC_MODE": ASYNC_MODE,
        "ENGINEIO_TRANSPORT": ENGINEIO_TRANSPORT,
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
        # A sweep of the server suites over a partitioned queue (TEST_QUEUE_PARTITIONS=3):
        # the tests that check one partition's names, offsets or in-process managers
        # then fail by design; the others must pass.
        "MESSAGE_QUEUE_PARTITIONS": os.environ.get("TEST_QUEUE_PARTITIONS", "1"),
    })
    env.update(overrides)
    return env


class RedisServer:
    """A private redis-server on a free port; stop() and start() keep the port (and, when
    `persistent`, the data: an append-only file fsynced at every write, so even a SIGKILL
    loses nothing that Redis answered)."""

    def __init__(self, persistent: bool = False, cluster: bool = False,
                 args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        # a cluster node's bus: from the tests' ports too (its default, the port + 10000,
        # falls in the kernel's ephemeral range, where a client socket can take it first)
        self.bus_port = free_port() if cluster else None
        self.persistent = persistent
        self.cluster = cluster
        self.args = args  # more redis-server options
        self.dir = tempfile.mkdtemp(prefix="test-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        refuse_in_process_tier("redis-server")
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.persistent else "no", "--appendfsync", "always",
             "--dir", self.dir, "--logfile", "",
             *(["--cluster-enabled", "yes", "--cluster-port", str(self.bus_port),
                "--cluster-node-timeout", "1000",
                "--cluster-require-full-coverage", "no"] if self.cluster else []), *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ping, STARTUP_TIMEOUT, message=f"redis-server on {self.port}")
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def node_id(self) -> str:
        return self.client().execute_command("CLUSTER", "MYID").decode()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisClusterServer:
    """A private Redis Cluster: `masters` nodes sharing the 16384 slots (and `replicas`
    more, each replicating one of the masters in turn), every node with an append-only
    file fsynced at every write. A node can be killed and started again on its port."""

    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        self.nodes = [RedisServer(persistent=True, cluster=True) for _ in range(masters + replicas)]
        self.masters = masters

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def start(self) -> RedisClusterServer:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes[:self.masters]]
        subprocess.run([shutil.which("redis-cli"), "--cluster", "create", *addresses,
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        for i, replica in enumerate(self.nodes[self.masters:]):
            master = self.nodes[i % self.masters]
            replica.client().execute_command("CLUSTER", "MEET", "127.0.0.1", master.port,
                                             master.bus_port)
            wait_for(lambda master=master, replica=replica: master.node_id() in
                     replica.client().execute_command("CLUSTER", "NODES").decode(),
                     STARTUP_TIMEOUT, message="the replica meets")
            replica.client().execute_command("CLUSTER", "REPLICATE", master.node_id())
        wait_for(self.ready, STARTUP_TIMEOUT, message="the Redis Cluster's state ok")
        return self

    def ready(self) -> bool:
        try:
            return all(b"cluster_state:ok" in n.client().execute_command("CLUSTER", "INFO")
                       and n.client().execute_command("CLUSTER", "SLOTS")
                       for n in self.nodes if n.process is not None)
        except redis.RedisError:
            return False

    def owner(self, key: str) -> RedisServer:
        """The master serving `key`'s slot (as its nodes say now)."""
        slot = key_slot(key.encode())
        for n in self.nodes:
            if n.process is None:
                continue
            for start, end, master, *_ in n.client().execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return next(x for x in self.nodes if x.port == int(master[1]))
        raise AssertionError(f"no node serves slot {slot}")

    def replica_of(self, master: RedisServer) -> RedisServer:
        """A node replicating `master` (ROLE: slave, its host, its port, ...)."""
        return next(n for n in self.nodes if n.process is not None and n is not master
                    and (role := n.client().execute_command("ROLE"))[0] == b"slave"
                    and int(role[2]) == master.port)

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


class RedisSentinelServer:
    """A master, a replica of it and a Sentinel watching them (service `mymaster`), all
    private; `fail_over()` has the Sentinel promote the replica."""

    def __init__(self) -> None:
        self.master = RedisServer(persistent=True)
        self.replica = RedisServer(persistent=True, args=(
            "--replicaof", "127.0.0.1", str(self.master.port)))
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="test-sentinel-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/0/mymaster"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def master_port(self) -> int:
        return int(self.client().execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")[1])

    def start(self) -> RedisSentinelServer:
        self.master.start()
        self.replica.start()
        wait_for(lambda: self.replica.client().info("replication").get("master_link_status")
                 == "up", STARTUP_TIMEOUT, message="the replica in sync")
        config = Path(self.dir) / "sentinel.conf"
        config.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                          f"sentinel monitor mymaster 127.0.0.1 {self.master.port} 1\n"
                          "sentinel down-after-milliseconds mymaster 1000\n"
                          "sentinel failover-timeout mymaster 10000\n")
        self.process = subprocess.Popen([shutil.which("redis-server"), str(config), "--sentinel"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def knows_replica() -> bool:
            try:
                return bool(self.client().execute_command("SENTINEL", "REPLICAS", "mymaster"))
            except redis.RedisError:
                return False

        wait_for(knows_replica, STARTUP_TIMEOUT, message="the Sentinel to know the replica")
        return self

    def fail_over(self) -> None:
        """The replica promoted, the old master made its replica (both keep running)."""
        self.client().execute_command("SENTINEL", "FAILOVER", "mymaster")
        wait_for(lambda: self.master_port() == self.replica.port, STARTUP_TIMEOUT,
                 message="the Sentinel to promote the replica")

    def cleanup(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
        self.master.cleanup()
        self.replica.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


def keep_sending(sender, room: str, acks: list, stop: threading.Event) -> None:
    """Numbered messages to `room`, one every 50 ms, their acks in `acks`, until `stop`."""
    n = 0
    while not stop.is_set():
        acks.append(sender.call("message", {"room": room, "text": str(n)}, timeout=30))
        n += 1
        time.sleep(0.05)


def traffic_through(fault: Callable[[], None], url: str, start_own_server, connect,
                    room: str, resume_within: float = 25.0, **env: str) -> list[dict]:
    """Messages from a server to a member on another, both on the queue at `url`,
    while `fault()` breaks that queue; returns the acks, once checked: nothing acked ok
    lost, none delivered twice, in order, every refusal a queue error, and none refused
    as unsent (`queue_unavailable`) delivered."""
    servers = [start_own_server(MESSAGE_QUEUE_URL=url, **env) for _ in range(2)]
    sender, receiver = connect(servers[0].url, user="sender"), connect(servers[1].url, user="rcv")
    for client in (sender, receiver):
        client.call("join", {"room": room})
    acks: list[dict] = []
    stop = threading.Event()
    thread = threading.Thread(target=keep_sending, args=(sender, room, acks, stop))
    thread.start()
    try:
        wait_for(lambda: len(receiver.of("message")) >= 5, message="traffic before the fault")
        fault()
        count = len(acks)
        wait_for(lambda: len(acks) > count + 5 and acks[-1]["ok"], timeout=resume_within,
                 message=lambda: f"publishes acked ok again: {acks[-3:]}")
    finally:
        stop.set()
        thread.join(60)

    def missing():
        got = {m["id"] for m in receiver.of("message")}
        return [a["message"]["text"] for a in acks if a["ok"] and a["message"]["id"] not in got]

    wait_for(lambda: not missing(), message=lambda: f"acked messages to arrive: {missing()}")
    texts = [m["text"] for m in receiver.of("message")]
    assert len(texts) == len(set(texts)), "a message was delivered twice"
    assert texts == sorted(texts, key=int), "out of order"
    reported = [a for a in acks if not a["ok"]]
    assert {a["error"]["code"] for a in reported} <= {"queue_unavailable", "delivery_incomplete"}
    refused = {str(n) for n, a in enumerate(acks)
               if not a["ok"] and a["error"]["code"] == "queue_unavailable"}
    assert refused.isdisjoint(texts), "a message refused as unsent was delivered"
    return acks


class AppServer:
    """The template served by gunicorn with config/gunicorn.conf.py, as in production
    (`app`: another WSGI application than wsgi:application, "module:name")."""

    # Every server started in this test process: a failing test's report gets their
    # logs (tests/conftest.py), since a CI log keeps nothing else of them.
    started: list[AppServer] = []

    def __init__(self, app: str | None = None, **env: str) -> None:
        AppServer.started.append(self)
        self.app = app
        self.port = free_port()
        self.env = process_environment(BIND=f"127.0.0.1:{self.port}", **env)
        self.log_path = Path(tempfile.mkstemp(prefix="test-app-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None
        self.signalled: int | None = None  # the signal sent to this process already

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AppServer:
        refuse_in_process_tier("gunicorn")
        self.signalled = None
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py",
                 *([self.app] if self.app else [])],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        wait_for(self._healthy, STARTUP_TIMEOUT, interval=0.1, message=f"server {self.url}")
        return self

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
        try:
            return requests.get(self.url + "/api/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self, since: int = 0) -> str:
        """The server's log, from offset `since` (a `log_mark()`: what one test caused)."""
        with open(self.log_path, "rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")

    def log_mark(self) -> int:
        return self.log_path.stat().st_size

    def worker_pids(self) -> set[int]:
        """gunicorn's workers: the children of the master process."""
        return child_pids(self.process.pid) if self.process is not None else set()

    def send_signal(self, sig: int = signal.SIGTERM) -> None:
        """Send `sig` without waiting (stop() then waits, without sending it twice):
        servers stopped together drain at the same time."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.signalled = sig

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            if self.signalled != sig:
                self.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        code, self.process, self.signalled = self.process.returncode, None, None
        return code


NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"


class Nginx:
    """nginx started from deploy/nginx/nginx.conf itself, with only what must differ
    natively replaced: the upstream servers, the port, the /tmp paths, and Docker's
    resolver (Debian's nginx is older than 1.27.3: no `resolve` on upstream servers,
    and the addresses here are fixed anyway)."""

    def __init__(self, upstreams: list[str]) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="test-nginx-"))
        self.dir.chmod(0o777)  # nginx workers run as "nobody" when started by root
        self.upstreams = upstreams
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def render(self) -> str:
        conf = NGINX_CONF.read_text()
        # each upstream group's one "server app:5000 resolve <parameters>;" line becomes
        # one line per instance, with the same parameters (max_fails, fail_timeout)
        server_line = re.compile(r"server app:5000 resolve([^;]*);")
        assert len(server_line.findall(conf)) == 2, f"{NGINX_CONF}: expected 2 upstream groups"
        conf = server_line.sub(lambda m: "\n        ".join(
            f"server {upstream}{m.group(1)};" for upstream in self.upstreams), conf)
        resolver = re.compile(r"^ *resolver(_timeout)? [^;]*;\n", re.MULTILINE)
        assert len(resolver.findall(conf)) == 2, f"{NGINX_CONF}: expected resolver lines"
        conf = resolver.sub("", conf)
        old = "listen 80;"
        assert conf.count(old) == 1, f"{NGINX_CONF} no longer has exactly one {old!r}"
        conf = conf.replace(old, f"listen 127.0.0.1:{self.port};")
        return conf.replace("/tmp/", f"{self.dir}/")

    def start(self) -> Nginx:
        refuse_in_process_tier("nginx")
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        conf = self.dir / "nginx.conf"
        conf.write_text(self.render())
        self.process = subprocess.Popen(
            [binary, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log"),
             "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for(self._up, STARTUP_TIMEOUT, interval=0.1, message=f"nginx on {self.port}")
        return self

    def _up(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError("nginx exited:\n" + (self.dir / "error.log").read_text())
        try:
            return requests.get(self.url + "/api/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


class NodeClients:
    """A Node script of Socket.IO clients (tests/stack/*_clients.js, the official
    socket.io-client from `node_modules`) that takes JSON options and commands on stdin,
    and writes JSON lines: {"progress": {...}} while it runs, {"result": {...}} at the end."""

    def __init__(self, script: Path, options: dict, node_modules: Path) -> None:
        refuse_in_process_tier("node")
        self.process = subprocess.Popen(
            ["node", str(script), json.dumps(options)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env={**os.environ, "NODE_PATH": str(node_modules)})
        self.progress: dict = {}
        self.result: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            message = json.loads(line)
            if "progress" in message:
                self.progress = message["progress"]
            else:
                self.result.put(message["result"])

    def until(self, condition, message: str, timeout: float = 30) -> dict:
        try:
            return wait_for(lambda: self.progress and condition(self.progress) and self.progress,
                            timeout=timeout, message=message)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; clients: {self.progress}") from None

    def more_delivered(self, timeout: float = 30) -> None:
        ok = self.progress["ok"] + 100
        self.until(lambda p: p["ok"] > ok, "publishes to go on", timeout)

    def command(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stop(self) -> dict:
        self.command("stop")
        result = self.result.get(timeout=90)
        self.process.wait(30)
        return result

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class ServerGroup:
    """Servers started by one fixture, stopped together by it."""

    def __init__(self) -> None:
        self.servers: list[AppServer] = []

    def start(self, **env: str) -> AppServer:
        server = AppServer(**env)
        self.servers.append(server)
        return server.start()

    def stop_all(self) -> None:
        """gunicorn's quick shutdown (SIGQUIT: 0.4 s against 1.3 s for SIGTERM, whose
        worker loop looks at its flag once a second); each worker still leaves the
        message queue as it exits. Tests of the graceful drain send SIGTERM themselves."""
        for server in self.servers:  # all signalled first: their exits overlap
            server.send_signal(signal.SIGQUIT)
        for server in self.servers:
            server.stop(signal.SIGQUIT)


class OrderedEngineIOClient(engineio.Client):
    """python-engineio's client runs each received message's handler in a new thread,
    so a test could see two messages in another order than they arrived. Here one
    thread per connection handles them, in arrival order. (Not the reading thread: a
    server disconnect makes the handler join the reading thread.)"""

    _messages: queue.Queue | None = None

    def _trigger_event(self, event, *args, **kwargs):
        if event == "message" and kwargs.get("run_async"):
            if self._messages is None:
                self._messages = queue.Queue()
                threading.Thread(target=self._handle_messages, args=(self._messages,),
                                 daemon=True).start()
            self._messages.put(args)
            return None
        if event == "disconnect" and self._messages is not None:
            self._messages.put(None)  # after every message received before it
            self._messages = None
        return super()._trigger_event(event, *args, **kwargs)

    def _handle_messages(self, messages: queue.Queue) -> None:
        while (args := messages.get()) is not None:
            super()._trigger_event("message", *args, run_async=False)


class OrderedClient(socketio.Client):
    def _engineio_client_class(self):
        return OrderedEngineIOClient


class Client:
    """A real python-socketio client that records every event it receives, in order."""

    def __init__(self, transport: str = "websocket", reconnection: bool = False,
                 headers: dict | None = None) -> None:
        # python-socketio sends `headers` with the handshake only; polling requests
        # need them too (X-Forwarded-For picks the instance behind nginx), so they go
        # in a session of our own, which the client keeps across reconnections.
        session = requests.Session()
        session.headers.update(headers or {})
        self.sio = OrderedClient(reconnection=reconnection, reconnection_delay=0.2,
                                 reconnection_delay_max=1, http_session=session)
        self.transport = transport
        self.events: queue.Queue = queue.Queue()
        self.received: list[tuple[str, str, Any]] = []
        self.connect_errors: list[Any] = []
        self.disconnects: list[tuple[str, Any]] = []
        self.connects: list[str] = []
        self.namespace = "/chat"  # of call/of/wait_event/round_trip without namespace=
        self._lock = threading.Lock()

    def _record(self, event: str, namespace: str, data: Any) -> None:
        with self._lock:
            self.received.append((namespace, event, data))

    def watch(self, namespace: str) -> None:
        self.sio.on("*", lambda event, *args: self._record(event, namespace,
                                                           args[0] if args else None),
                    namespace=namespace)
        # connect, connect_error and disconnect never reach catch-all handlers
        self.sio.on("connect", lambda: self.connects.append(namespace), namespace=namespace)
        self.sio.on("connect_error", lambda data: self.connect_errors.append(data),
                    namespace=namespace)
        self.sio.on("disconnect", lambda reason=None: self.disconnects.append((namespace, reason)),
                    namespace=namespace)

    def connect(self, url: str, namespaces: list[str], auth: Any = None,
                headers: dict | None = None) -> Client:
        for namespace in namespaces:
            self.watch(namespace)
        self.sio.connect(url, namespaces=namespaces, auth=auth, headers=headers or {},
                         transports=[self.transport], wait_timeout=10)
        return self

    def call(self, event: str, data: Any = None, namespace: str | None = None,
             timeout: float = WAIT):
        return self.sio.call(event, data, namespace=namespace or self.namespace, timeout=timeout)

    def call_until_acked(self, event: str, data: Any = None, timeout: float = WAIT,
                         attempt_timeout: float = 5.0):
        """An event resent, as the README's client does, until an ack comes: an emit
        made while the session is being cut (a polling session that a proxy's
        failback sends to another instance) is lost with it. Returns the ack."""
        def attempt():
            if not self.sio.connected:
                return False
            with contextlib.suppress(socketio.exceptions.TimeoutError,
                                     socketio.exceptions.BadNamespaceError):
                return self.call(event, data, timeout=attempt_timeout)
            return False

        return wait_for(attempt, timeout=timeout, interval=0.1,
                        message=f"an ack of {event!r} ({self.transport}: connects "
                                f"{self.connects}, disconnects {self.disconnects})")

    def send(self, room: str, text: str, timeout: float = WAIT) -> dict:
        """A chat message sent as a client should: retried with the same `client_id`
        while the queue answers `queue_unavailable` or `delivery_incomplete` (just after
        a worker died, say), so it is delivered once. Returns the message."""
        client_id = uuid.uuid4().hex

        def attempt():
            ack = self.call("message", {"room": room, "text": text, "client_id": client_id})
            assert ack["ok"] or ack["error"]["code"] in RETRIED_CODES, ack
            return ack["ok"] and ack["message"]

        return wait_for(attempt, timeout=timeout, interval=0.1,
                        message=f"{text!r} acked ok")

    def round_trip(self, namespace: str | None = None) -> None:
        """A barrier: an event and its ack. Whatever the server had queued for this
        client before it is received (and recorded) before the ack, so a test can
        then assert that something did *not* arrive, without sleeping."""
        ack = self.call("__barrier__", {}, namespace=namespace)
        assert ack["error"]["code"] == "unknown_event", ack

    def of(self, event: str, namespace: str | None = None) -> list[Any]:
        namespace = namespace or self.namespace
        with self._lock:
            return [data for ns, name, data in self.received if ns == namespace and name == event]

    def wait_event(self, event: str, count: int = 1, namespace: str | None = None) -> list[Any]:
        namespace = namespace or self.namespace
        return wait_for(lambda: len(self.of(event, namespace)) >= count and self.of(event, namespace),
                        message=f"{count} {event!r} event(s) on {namespace}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            # (not disconnect(): a client reconnecting to a server gone with its test
            # would go on, drawing its delays from the global `random` while a later
            # test's Hypothesis draws: its HypothesisDeprecationWarning)
            self.sio.shutdown()
