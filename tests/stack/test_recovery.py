"""Nothing missed across reconnects, worker changes and restarts, as a deployment sees
them: nginx in front of two instances of two workers each, a real Redis, clients in
rooms receiving a steady stream while

  (a) some clients' connections are cut (TCP destroyed) and they stay away 2 s,
  (b) a worker is SIGKILLed,
  (c) an instance is SIGTERM-drained and started again,
  (d) Redis is killed and restarted while some clients are away.

- The official socket.io-client under Node (recovery_clients.js) with Socket.IO's
  connection-state recovery: a client whose `socket.recovered` is true does not re-join:
  its rooms and what it missed must come back from the server, once, in order. One whose
  `recovered` is false re-joins with `since` and merges the ack's history.
- The python-socketio client, which has no recovery (it opts out with `"recovery":
  false` in its auth, so that events carry no extra offset argument): it re-joins with
  `since` on every connect and merges the history. Faults (b), (c) and (d); in (d) its
  cut clients come back while Redis is still down and retry their joins until it is up.

Either way every message acked ok reaches every member of its room (all stay members
throughout) exactly once, after skipping the stream ids it already has, and in its
sender's order. Each test prints a line per fault (run with -s), and how many live
messages arrived after a later stream id of their room: a client that dropped between
the two and re-joined `since` the later one would not get the earlier one back.

Redis runs with an append-only file fsynced at every write: the room histories that
`since` reads, and the sessions and event log that recovery replays, live in Redis, and a
Redis restarted without them has nothing to give back (`complete: false`, `recovered:
false`). Without persistence that is what a deployment chose, not something these tests
could hold the template to.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pytest
import requests
import socketio

from app.core.history import parse_id
from tests.helpers import ROOT, AppServer, Client, Nginx, NodeClients, RedisServer, chat_connections, wait_for

CHAT = "/chat"
ENV = {"WORKERS": "2", "TRANSPORTS": "websocket", "EVENT_RATE": "500", "EVENT_BURST": "500",
       "LOG_LEVEL": "INFO", "LOG_FORMAT": "text", "MAX_CONNECTIONS_PER_ADDRESS": "1000",
       "GRACEFUL_TIMEOUT": "10"}
OFFLINE = 2.0     # (a): how long a cut client stays away; the fault's length, not a wait
REDIS_DOWN = 3.0  # (d): likewise
# Seconds from a disconnect to being back in every room (re-joined or recovered); not a
# speed requirement, a bound for a loaded machine (a SIGKILLed worker's clients wait for
# its replacement to boot). (d)'s held clients are away longer.
BACK_WITHIN = 15.0
FAULTS = {"a": f"connections cut {OFFLINE:g} s", "b": "worker SIGKILLed",
          "c": "instance drained and restarted", "d": f"Redis down {REDIS_DOWN:g} s"}
EXPECTED_CODES = {"queue_unavailable", "delivery_incomplete", "shutting_down", "operation has timed out",
                  "socket has been disconnected", "disconnected"}

# Node clients: 40 in 5 rooms, each in 2 (16 members a room), 10 senders (2 a room), a
# message every 100 ms each
NODE_CLIENTS, NODE_ROOMS, ROOMS_PER_CLIENT, NODE_SENDERS, NODE_EVERY_MS = 40, 5, 2, 10, 100
NODE_CUT = (0, 1, 7, 13, 22, 31)       # (a): three senders, three that only receive
NODE_HELD = (2, 5, 18, 27, 36)         # (d)
# python clients: 8 in both of 2 rooms, 4 senders, a message every 50 ms each
PY_CLIENTS, PY_ROOMS, PY_SENDERS, PY_EVERY = 8, 2, 4, 0.05
PY_CUT = (1, 4, 6)                     # (d)


@pytest.fixture()
def aof_redis():
    server = RedisServer(persistent=True).start()
    yield server
    server.cleanup()


@dataclass
class Stack:
    redis: RedisServer
    first: AppServer
    second: AppServer
    nginx: Nginx


@pytest.fixture()
def stack(aof_redis, start_own_server):
    env = {**ENV, "MESSAGE_QUEUE_URL": aof_redis.url}
    first, second = start_own_server(**env), start_own_server(**env)
    nginx = Nginx([f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]).start()
    yield Stack(aof_redis, first, second, nginx)
    nginx.stop()


def stack_connections(stack: Stack, tokens) -> dict[int, int]:
    return chat_connections(stack.first.url, tokens.issue("root", "root", "admin"), 4)


def busiest_worker(stack: Stack, tokens) -> tuple[int, int]:
    """The worker with the most /chat connections, and how many it has."""
    pid, count = max(stack_connections(stack, tokens).items(), key=lambda item: item[1])
    assert count > 0
    return pid, count


def connections_of(stack: Stack, tokens, server) -> int:
    pids = server.worker_pids()
    return sum(n for pid, n in stack_connections(stack, tokens).items() if pid in pids)


def report(kind: str, phases: dict, faults: str) -> list[str]:
    """A line per fault: what the closing note quotes."""
    lines = []
    for name in faults:
        label, p = FAULTS[name], phases.get(name, {})
        lines.append(
            f"{kind} ({name}) {label}: {p.get('acked', 0)} messages acked, "
            f"{p.get('checked', 0)} deliveries checked, {p.get('missing', 0)} missing, "
            f"recovered {p.get('recovered', 0)}/{p.get('reconnects', 0)}, "
            f"resynced {p.get('resynced', 0)}, duplicates {p.get('duplicates', 0)}, "
            f"inversions {p.get('inversions', 0)}, incomplete {p.get('incomplete', 0)}, "
            f"slowest back {p.get('slowestBackMs', 0) / 1000:.1f}s")
    return lines


def delivery_problems(phases: dict) -> list[str]:
    """What breaks "every message acked ok reaches every member once, in order"."""
    problems = []
    for name, p in phases.items():
        for key in ("missing", "duplicates", "inversions", "incomplete", "notBack"):
            if p.get(key):
                problems.append(f"({name}) {key}: {p[key]}")
        bound = (BACK_WITHIN + OFFLINE if name == "a" else BACK_WITHIN) * 1000
        if name != "d" and p.get("slowestBackMs", 0) > bound:
            problems.append(f"({name}) a client came back after {p['slowestBackMs']} ms")
    return problems


# --- the official client, with recovery -----------------------------------------
def test_node_clients_recover_what_they_missed(node_modules, stack, tokens):
    options = {"url": stack.nginx.url, "rooms": NODE_ROOMS, "roomsPerClient": ROOMS_PER_CLIENT,
               "senders": NODE_SENDERS, "every": NODE_EVERY_MS,
               "tokens": [tokens.issue(f"r{i}", f"r{i}", "user") for i in range(NODE_CLIENTS)]}
    clients = NodeClients(ROOT / "tests" / "stack" / "recovery_clients.js", options, node_modules)

    started = time.monotonic()
    try:
        clients.until(lambda p: p["sending"], "every client to join")
        clients.more_delivered()

        clients.command("phase a")
        gone = clients.progress["disconnects"] + len(NODE_CUT)
        clients.command(f"cut {int(OFFLINE * 1000)} " + " ".join(map(str, NODE_CUT)))
        clients.until(lambda p: p["disconnects"] >= gone, "the cut")
        clients.until(lambda p: p["inRooms"] == NODE_CLIENTS, "every client back after the cut")
        clients.more_delivered()

        clients.command("phase b")
        pid, count = busiest_worker(stack, tokens)
        gone = clients.progress["disconnects"] + count
        os.kill(pid, signal.SIGKILL)
        clients.until(lambda p: p["disconnects"] >= gone, "the killed worker's clients to drop")
        clients.until(lambda p: p["inRooms"] == NODE_CLIENTS, "every client back after the kill")
        clients.more_delivered()

        clients.command("phase c")
        gone = clients.progress["disconnects"] + connections_of(stack, tokens, stack.second)
        drained = stack.second.worker_pids()
        stack.second.stop(signal.SIGTERM)
        clients.until(lambda p: p["disconnects"] >= gone, "the drained instance's clients to go")
        clients.until(lambda p: p["inRooms"] == NODE_CLIENTS, "every client back after the drain")
        stack.second.start()
        assert stack.second.worker_pids().isdisjoint(drained)
        clients.more_delivered()

        clients.command("phase d")
        gone = clients.progress["disconnects"] + len(NODE_HELD)
        clients.command("cut -1 " + " ".join(map(str, NODE_HELD)))
        clients.until(lambda p: p["disconnects"] >= gone, "the held clients to go")
        # acks after the cut: the servers have seen those clients go, with Redis up
        clients.more_delivered()
        restart_redis(stack.redis, lambda: clients.progress["failed"],
                      lambda: clients.progress["ok"])
        clients.command("release")
        clients.until(lambda p: p["inRooms"] == NODE_CLIENTS, "every client back after Redis")
        clients.more_delivered()

        result = clients.stop()
    finally:
        clients.kill()
    elapsed = time.monotonic() - started
    phases = result["phases"]
    print("\n" + "\n".join(report("node", phases, "abcd")))
    print(f"node: {result['live']} live message events, {result['withOffset']} with an offset "
          f"({result['offsetInversions']} not after the one before), {result['belowLast']} "
          f"after a later id of their room, {result['overlaps']} history/live overlaps "
          f"skipped, codes {result['codes']}, refusals {result['refusals']}, {elapsed:.0f}s")

    # the run did what it meant to
    assert all(phases[name]["acked"] > 0 for name in FAULTS), phases
    assert phases["a"]["reconnects"] >= len(NODE_CUT) and phases["d"]["reconnects"] >= len(NODE_HELD)
    assert phases["b"]["reconnects"] > 0 and phases["c"]["reconnects"] > 0
    problems = delivery_problems(phases)
    if result["missingSamples"]:
        problems.append(f"missing, e.g.: {json.dumps(result['missingSamples'][:3])}")
    if result["ownEchoes"]:
        problems.append(f"{result['ownEchoes']} messages came back to their sender's socket")
    if result["markersFailed"]:
        problems.append(f"{result['markersFailed']} closing markers not acked ok")
    if set(result["codes"]) - EXPECTED_CODES:
        # e.g. not_in_room: a recovered sender was not back in its room
        problems.append(f"unexpected ack codes: {result['codes']}")
    # recovery: every room event carries its offset, a socket receives them in their
    # order (the client resumes after the last one it got: one below it arriving later
    # would be skipped by a recovery in between), and every reconnection (all within the
    # window, Redis's data kept) recovers
    if result["withOffset"] != result["live"]:
        problems.append(f"{result['live'] - result['withOffset']} of {result['live']} message "
                        "events without an offset argument")
    if result["offsetInversions"]:
        problems.append(f"{result['offsetInversions']} events with an offset not after the one "
                        "before on their socket")
    for name in FAULTS:
        p = phases[name]
        if p["recovered"] != p["reconnects"]:
            problems.append(f"({name}) recovered {p['recovered']}/{p['reconnects']}")
    if problems:  # the servers' account of each recovery that did not happen
        problems += [line for server in (stack.first, stack.second)
                     for line in server.log().splitlines() if "recovery" in line]
    assert not problems, "\n".join(problems)


def restart_redis(redis: RedisServer, failed, ok) -> None:
    """Kill Redis, keep it down REDIS_DOWN seconds, start it again and wait for publishes to
    be acked ok again."""
    refused = failed()
    redis.stop()
    wait_for(lambda: failed() > refused, timeout=30, message="publishes to be refused")
    time.sleep(REDIS_DOWN)
    redis.start()
    acked = ok()
    wait_for(lambda: ok() > acked + 50, timeout=30, message="publishes to succeed again")


# --- python-socketio, through `since` -------------------------------------------
@dataclass
class Run:
    """What the python clients share: the current phase, and per-phase counts."""

    phase: str = "warmup"
    tally: defaultdict = field(default_factory=lambda: defaultdict(Counter))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, key: str) -> None:
        with self.lock:
            self.tally[self.phase][key] += 1


@dataclass
class Entry:
    sender: int
    seq: int | str  # "end": the closing marker
    via: str
    phase: str


class SinceClient:
    """A python-socketio client that, as docs/events.md asks of a client without recovery,
    re-joins its rooms on every connect with `since` = the last stream_id it has of each,
    merges the ack's history (and the REST pages after it while `more`) and skips stream
    ids it already has. Handlers run one at a time, in arrival order (tests' Client)."""

    def __init__(self, i: int, token: str, run: Run) -> None:
        self.i, self.token, self.run = i, token, run
        self.rooms = [f"py-{(i + k) % PY_ROOMS}" for k in range(PY_ROOMS)]
        self.room, self.sends = self.rooms[0], i < PY_SENDERS
        self.client = Client(reconnection=True)
        self.sio = self.client.sio
        self.delays = (self.sio.reconnection_delay, self.sio.reconnection_delay_max,
                       self.sio.randomization_factor)
        self.lock = threading.Lock()
        self.seen: dict[str, dict[str, Entry]] = {room: {} for room in self.rooms}
        self.last: dict[str, str] = {}
        self.live_seq: dict[tuple[str, int], int] = {}
        self.gen = 0
        self.in_rooms = False
        self.reconnects: list[dict] = []  # {phase, at, back}
        self.seq = 0
        # seq -> (phase, ok, error code or the stream_id)
        self.acks: dict[int | str, tuple[str, bool, str | None]] = {}
        self.outstanding: set[int] = set()
        for event, handler in (("connect", self._connected), ("disconnect", self._disconnected),
                               ("connect_error", self._refused), ("message", self._message)):
            self.sio.on(event, handler, namespace=CHAT)

    def connect(self, url: str) -> None:
        self.url = url
        self.sio.connect(url, namespaces=[CHAT], transports=["websocket"], wait_timeout=10,
                         auth={"token": self.token, "recovery": False})

    # --- (re)connecting -------------------------------------------------------
    def _connected(self) -> None:
        self.sio.reconnection_delay, self.sio.reconnection_delay_max, \
            self.sio.randomization_factor = self.delays  # after a cut's
        with self.lock:
            self.gen += 1
            # what it had before this connection: a failed join is retried `since` the
            # same id (live messages may flow before the join is acked)
            gen, pending, since = self.gen, set(self.rooms), dict(self.last)
            if self.reconnects:
                self.reconnects[-1]["since"] = since
        for room in self.rooms:
            self._join(room, gen, pending, since.get(room))

    def _join(self, room: str, gen: int, pending: set[str], since: str | None) -> None:
        payload = {"room": room, **({"since": since} if since else {})}
        # disconnected meanwhile: the next connect joins
        with contextlib.suppress(socketio.exceptions.SocketIOError):
            self.sio.emit("join", payload, namespace=CHAT,
                          callback=lambda ack: self._joined(room, gen, pending, since, ack))

    def _joined(self, room: str, gen: int, pending: set[str], since: str | None,
                ack: dict) -> None:
        if gen != self.gen:
            return
        try:
            if not ack.get("ok"):
                raise RuntimeError(f"join:{ack['error']['code']}")
            # the pages follow the last message of the one before (not the latest id this
            # client has: live messages arrive meanwhile)
            after = self._merge(ack["history"], ack.get("complete"), ack.get("more"))
            while after:
                after = self._next_page(room, after)
        except (RuntimeError, requests.RequestException) as exc:
            # e.g. Redis down: try again while this connection lasts
            self.run.count(f"error {str(exc)[:60]}")
            threading.Timer(0.3, lambda: gen == self.gen and self._join(room, gen, pending, since)
                            ).start()
            return
        with self.lock:
            pending.discard(room)
            if pending or gen != self.gen:
                return
            self.in_rooms = True
            if self.reconnects and self.reconnects[-1]["back"] is None:
                self.reconnects[-1]["back"] = time.monotonic() - self.reconnects[-1]["at"]

    def _next_page(self, room: str, after: str) -> str | None:
        response = requests.get(f"{self.url}/api/rooms/{room}/messages", timeout=10,
                                params={"after": after, "limit": 500},
                                headers={"Authorization": f"Bearer {self.token}"})
        if response.status_code != 200:
            raise RuntimeError(f"history:{response.status_code}")
        page = response.json()
        return self._merge(page["messages"], page.get("complete"), page.get("more"))

    def _merge(self, history: list[dict], complete, more) -> str | None:
        """Record a page of history; the id the next page follows (None: no more)."""
        for message in history:
            self._record(message, "history")
        if complete is False:
            self.run.count("incomplete")
        return history[-1]["stream_id"] if more and history else None

    def _disconnected(self, reason=None) -> None:
        with self.lock:
            self.in_rooms = False
            if self.run.phase == "closed":
                return
            self.reconnects.append({"phase": self.run.phase, "at": time.monotonic(),
                                    "back": None})
            # python-socketio forgets the callbacks of a dropped connection
            for seq in self.outstanding:
                self.acks.setdefault(seq, (self.run.phase, False, "disconnected"))
            self.outstanding.clear()

    def _refused(self, data=None) -> None:
        self.run.count(f"connect_error {data}"[:80])

    # --- receiving ------------------------------------------------------------
    def _message(self, message: dict, *extra) -> None:
        if extra:
            self.run.count("offset arguments despite recovery: false")
        self._record(message, "live")

    def _record(self, message: dict, via: str) -> None:
        sender_text, seq_text = message["text"].split(":")
        sender = int(sender_text)
        seq = seq_text if seq_text == "end" else int(seq_text)
        phase = self.run.phase
        with self.lock:
            seen = self.seen[message["room"]]
            known = seen.get(message["stream_id"])
            if known is not None:
                # live twice is a duplicate; history and live overlap around a re-join
                duplicate = via == "live" and known.via == "live"
                self.run.count("duplicates" if duplicate else "overlaps")
                return
            seen[message["stream_id"]] = Entry(sender, seq, via, phase)
            room = message["room"]
            if room not in self.last or parse_id(message["stream_id"]) > parse_id(self.last[room]):
                self.last[room] = message["stream_id"]
            elif via == "live":
                # after a later id of its room (another sender's, published first): had
                # it dropped in between, its `since` would have skipped this one
                self.run.count("below last")
            if via == "live" and seq != "end":
                if self.live_seq.get((room, sender), 0) > seq:
                    self.run.count("inversions")
                self.live_seq[(room, sender)] = seq

    # --- sending --------------------------------------------------------------
    def send_next(self) -> None:
        with self.lock:
            if not self.in_rooms:
                return
            self.seq += 1
            seq, phase = self.seq, self.run.phase
            self.outstanding.add(seq)
        try:
            self.sio.emit("message", {"room": self.room, "text": f"{self.i}:{seq}",
                                      "client_id": f"p{self.i}-{seq}"}, namespace=CHAT,
                          callback=lambda ack: self._acked(seq, phase, ack))
        except socketio.exceptions.SocketIOError:
            self._acked(seq, phase, {"ok": False, "error": {"code": "disconnected"}})

    def _acked(self, seq: int, phase: str, ack: dict) -> None:
        with self.lock:
            self.outstanding.discard(seq)
            self.acks[seq] = (phase, ack["ok"], ack["message"]["stream_id"] if ack["ok"]
                              else ack["error"]["code"])

    def acked(self, ok: bool) -> int:
        """How many of its messages were acked ok (or not)."""
        with self.lock:
            return sum(1 for _, acked_ok, _ in self.acks.values() if acked_ok == ok)

    def has(self, room: str, sender: int, seq: int | str) -> bool:
        with self.lock:
            return any((e.sender, e.seq) == (sender, seq) for e in self.seen[room].values())

    def send_marker(self) -> bool:
        # retried with the same client_id until acked ok: delivered once however often
        ack = self.client.call("message", {"room": self.room, "text": f"{self.i}:end",
                                           "client_id": f"p{self.i}-end"}, timeout=10)
        with self.lock:
            self.acks["end"] = ("end", ack["ok"], None if ack["ok"] else ack["error"]["code"])
        return ack["ok"]

    def cut(self, offline: float) -> None:
        """Shut the TCP connection down under the client: it reconnects after `offline`."""
        self.sio.reconnection_delay = self.sio.reconnection_delay_max = offline
        self.sio.randomization_factor = 0
        self.sio.eio.ws.sock.shutdown(socket.SHUT_RDWR)


def analyse(clients: list[SinceClient], run: Run) -> tuple[dict, list[dict]]:
    """Per phase, the counts of report() (as recovery_clients.js gives them); a few of
    the messages missing."""
    phases = {name: Counter(counts) for name, counts in run.tally.items()}
    missing: list[dict] = []  # a few samples
    phase = lambda name: phases.setdefault(name, Counter())  # noqa: E731
    for c in clients:
        for name, ok, _ in c.acks.values():
            phase(name)["acked" if ok else "failed"] += 1
        for i, d in enumerate(c.reconnects):
            p = phase(d["phase"])
            p["reconnects"] += 1
            p["resynced"] += d["back"] is not None
            # a connection that dropped again before it was back counts under the later drop
            p["notBack"] += d["back"] is None and i == len(c.reconnects) - 1
            if d["back"] is not None:
                p["slowestBackMs"] = max(p["slowestBackMs"], round(d["back"] * 1000))
    for c in clients:
        for room in c.rooms:
            seen = c.seen[room]
            # what it has, merged in the room's order: each sender's messages in its order
            last: dict[int, int] = {}
            for stream_id in sorted(seen, key=parse_id):
                entry = seen[stream_id]
                if entry.seq == "end":
                    continue
                if last.get(entry.sender, 0) >= entry.seq:
                    phase(entry.phase)["inversions"] += 1
                last[entry.sender] = entry.seq
            got = {(entry.sender, entry.seq) for entry in seen.values()}
            for s in clients:
                if not s.sends or s.room != room or s is c:
                    continue
                for seq, (name, ok, stream_id) in s.acks.items():
                    if ok:
                        phase(name)["checked"] += 1
                        phase(name)["missing"] += (s.i, seq) not in got
                        if (s.i, seq) not in got and len(missing) < 5:
                            missing.append({"to": c.i, "room": room, "from": s.i, "seq": seq,
                                            "stream_id": stream_id, "phase": name,
                                            "reconnects": c.reconnects})
    return {name: dict(counts) for name, counts in phases.items()}, missing


def test_python_clients_catch_up_through_since(stack, tokens):
    run = Run()
    clients = [SinceClient(i, tokens.issue(f"p{i}", f"p{i}", "user"), run)
               for i in range(PY_CLIENTS)]
    stop = threading.Event()

    def keep_sending():
        while not stop.wait(PY_EVERY):
            for c in clients:
                if c.sends:
                    c.send_next()

    def progress(key: str) -> int:
        return sum(c.acked(key == "ok") for c in clients)

    def more_delivered() -> None:
        acked = progress("ok")
        wait_for(lambda: progress("ok") > acked + 50, timeout=30, message="publishes to go on")

    def everyone_back(what: str, disconnects: int) -> None:
        wait_for(lambda: sum(len(c.reconnects) for c in clients) >= disconnects, timeout=30,
                 message=f"{what}: the clients to drop")
        wait_for(lambda: all(c.in_rooms for c in clients), timeout=30,
                 message=f"every client back after {what}")

    def disconnects() -> int:
        return sum(len(c.reconnects) for c in clients)

    sender = threading.Thread(target=keep_sending, daemon=True)
    started = time.monotonic()
    try:
        for c in clients:
            c.connect(stack.nginx.url)
        wait_for(lambda: all(c.in_rooms for c in clients), message="every client to join")
        sender.start()
        more_delivered()

        run.phase = "b"
        pid, count = busiest_worker(stack, tokens)
        gone = disconnects() + count
        os.kill(pid, signal.SIGKILL)
        everyone_back("the kill", gone)
        more_delivered()

        run.phase = "c"
        gone = disconnects() + connections_of(stack, tokens, stack.second)
        stack.second.stop(signal.SIGTERM)
        everyone_back("the drain", gone)
        stack.second.start()
        more_delivered()

        run.phase = "d"
        gone = disconnects() + len(PY_CUT)
        for i in PY_CUT:
            clients[i].cut(OFFLINE)
        wait_for(lambda: disconnects() >= gone, message="the cut")
        # acks after the cut: the servers have seen those clients go, with Redis up
        more_delivered()
        restart_redis(stack.redis, lambda: progress("failed"), lambda: progress("ok"))
        everyone_back("Redis", gone)
        more_delivered()

        run.phase = "end"
        stop.set()
        sender.join(10)
        wait_for(lambda: not any(c.outstanding for c in clients), timeout=30,
                 message="every ack")
        for s in clients:
            if s.sends:
                wait_for(s.send_marker, timeout=30, interval=0.5, message=f"{s.i}'s marker")
        # every member has every sender's marker: nothing more is coming
        wait_for(lambda: all(c.has(s.room, s.i, "end")
                             for c in clients for s in clients if s.sends and s is not c),
                 timeout=30, message="every marker")
    finally:
        stop.set()
        run.phase = "closed"
        for c in clients:
            c.client.close()
    elapsed = time.monotonic() - started
    phases, missing = analyse(clients, run)
    print("\n" + "\n".join(report("python", phases, "bcd")))
    print(f"python: {sum(len(c.reconnects) for c in clients)} reconnections, "
          f"{sum(p.get('overlaps', 0) for p in phases.values())} history/live overlaps "
          f"skipped, {elapsed:.0f}s; other counts: "
          f"{ {k: v for p in phases.values() for k, v in p.items() if ' ' in k} }")

    assert all(phases[name].get("acked", 0) > 0 for name in "bcd"), phases
    assert all(phases[name].get("reconnects", 0) > 0 for name in "bcd"), phases
    problems = delivery_problems(phases)
    if missing:
        problems.append(f"missing, e.g.: {missing}")
    codes = {code for c in clients for _, ok, code in c.acks.values() if not ok}
    if codes - EXPECTED_CODES:
        problems.append(f"unexpected ack codes: {codes}")
    offsets = sum(p.get("offset arguments despite recovery: false", 0) for p in phases.values())
    if offsets:
        problems.append(f"{offsets} events with an offset argument despite recovery: false")
    assert not problems, "\n".join(problems)
