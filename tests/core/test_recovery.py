"""Recovery's claim of a record whose old connection is still leaving this worker (in
process, with the disconnect's progress driven by the test)."""

from __future__ import annotations

import time

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
