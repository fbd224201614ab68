"""Recovery's claim of a record whose old connection is still leaving this worker (in
process, with the disconnect's progress driven by the test)."""

from __future__ import annotations

import threading
import time

import redis

from app.core.history import EventLog
from app.core.recovery import TWIN_GONE_TIMEOUT, Recovery, Sessions


class Worker:
    """The server and manager Recovery talks to: one socket, `sid`, whose disconnect
    is under way and finishes after `finishes_after` seconds of the worker's sleeps."""

    def __init__(self, finishes_after: float) -> None:
        self.manager = self
        self.connected = {"sid": "eio-old"}
        self.finishes_after = finishes_after
        self.slept = 0.0

    def eio_sid_from_sid(self, sid, namespace):
        return self.connected.get(sid)

    def end_session(self, eio_sid):
        """Already closing: python-engineio does nothing more now."""

    def sleep(self, seconds):
        time.sleep(seconds)
        self.slept += seconds
        if self.slept >= self.finishes_after:
            self.connected.pop("sid", None)


def claim_while_leaving(finishes_after: float):
    worker = Worker(finishes_after)
    log = EventLog(None, "test", max_length=100, max_age=3600)
    log.logged["/chat"] = "room:"
    sessions = Sessions(None, "test", "local", window=120)
    sessions.save("local.pid", {"sid": "sid", "ns": "/chat", "user": "alice", "rooms": [],
                                "at": 0})  # live: its disconnect has not parked it yet
    recovery = Recovery(worker, log, sessions)
    return recovery.begin("/chat", {"token": "t", "pid": "local.pid", "offset": "1-0"}), worker


def test_a_reconnect_during_its_old_connections_disconnect_is_recovered():
    state, worker = claim_while_leaving(finishes_after=0.3)
    assert state.record is not None and state.pid == "local.pid"  # restored once authenticated
    assert 0.3 <= worker.slept < TWIN_GONE_TIMEOUT


def test_a_twin_that_never_leaves_gives_a_fresh_socket():
    state, _ = claim_while_leaving(finishes_after=TWIN_GONE_TIMEOUT * 10)
    assert state.record is None and state.pid != "local.pid"


def test_records_are_written_behind_the_connect_in_batches(redis_server):
    """A save or a park is written by the next flush (one round trip for every one
    since, the parks first); a socket that leaves before its first flush is parked
    without ever being in the hash."""
    client = redis.Redis.from_url(redis_server.url)
    prefix = f"sessions-{time.monotonic_ns()}"
    sessions = Sessions(lambda: client, prefix, "w1", window=120)
    spawned = []
    sessions.create_event = threading.Event
    sessions.spawn = spawned.append  # (the test flushes by hand)
    record = {"sid": "s", "ns": "/chat", "user": "alice", "rooms": [], "at": 0}
    for n in range(3):
        sessions.save(f"w1.p{n}", {**record, "sid": f"s{n}"})
    assert len(spawned) == 1 and client.hlen(f"{prefix}:recovery:w:w1") == 0
    assert sessions.claim("w1.p0") is None  # not written yet: a fresh socket

    sessions.flush()
    assert client.hlen(f"{prefix}:recovery:w:w1") == 3
    assert sessions.claim("w1.p1") == ({**record, "sid": "s1"}, "live")

    sessions.save("w1.p3", {**record, "sid": "s3"})
    sessions.park("w1.p3", {**record, "sid": "s3", "rooms": ["room:a"]})  # before any flush
    sessions.park("w1.p2", {**record, "sid": "s2"})
    assert client.hlen(f"{prefix}:recovery:w:w1") == 2  # parks wait for the flush too
    sessions.flush()
    assert client.hkeys(f"{prefix}:recovery:w:w1") == [b"w1.p0"]
    assert sessions.claim("w1.p3") == ({**record, "sid": "s3", "rooms": ["room:a"]}, "parked")
    assert sessions.claim("w1.p2") == ({**record, "sid": "s2"}, "parked")

    # A socket gone and back before its park is written: the reconnect takes the record
    # from the hash, and its new save (the same pid) follows the park, which finds
    # nothing to move: the new record stays live, and nothing is parked.
    sessions.park("w1.p0", {**record, "sid": "s0", "rooms": ["room:old"]})
    assert sessions.claim("w1.p0") == ({**record, "sid": "s0"}, "live")
    sessions.save("w1.p0", {**record, "sid": "s0-new"})
    sessions.flush()
    assert client.hkeys(f"{prefix}:recovery:w:w1") == [b"w1.p0"]
    assert client.get(f"{prefix}:recovery:w1.p0") is None
    assert sessions.claim("w1.p0") == ({**record, "sid": "s0-new"}, "live")

    # ...or back on another worker, which saves its new record (in the pid's worker's
    # hash) before this worker's park is written: the park moves only what this worker
    # wrote, and the new record stays live.
    sessions.save("w1.p4", {**record, "sid": "s4"})
    sessions.flush()
    sessions.park("w1.p4", {**record, "sid": "s4", "rooms": ["room:old"]})
    other = Sessions(lambda: client, prefix, "w2", window=120)
    assert other.claim("w1.p4") == ({**record, "sid": "s4"}, "live")
    other.save("w1.p4", {**record, "sid": "s4", "rooms": ["room:new"]})
    sessions.flush()
    assert client.get(f"{prefix}:recovery:w1.p4") is None
    assert other.claim("w1.p4") == ({**record, "sid": "s4", "rooms": ["room:new"]}, "live")
