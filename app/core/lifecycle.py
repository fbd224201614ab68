"""A worker's lifecycle state: in-flight event handlers, and draining on shutdown."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)


def supervised(sleep: Callable[[float], None], loop: Callable[..., None], *args) -> None:
    """Run a worker's background loop for the worker's life: an unexpected error is
    logged and the loop started again (a dead pinger, watchdog or publisher would
    silently stop its duty for every client of the worker)."""
    while True:
        try:
            loop(*args)
            return
        except Exception:
            log.exception("background task %s failed: restarting it", loop.__name__)
            sleep(0.5)


# A sweep over every socket of a worker runs in this many slices per interval.
SWEEP_SLICES = 10


def sweep_paced(sleep: Callable[[float], None], interval: float,
                keys: Callable[[], Iterable[str]], visit: Callable[[str], None],
                slices: int = SWEEP_SLICES) -> None:
    """Visit every key of `keys()` once per `interval`, forever, a slice at a time.

    One pass over thousands of sockets (token expiry, slow consumers, pings) held the
    worker for several milliseconds, a delay for every delivery that fell into it (the
    10k-client bench's p99); in slices each pause is a tenth. A key keeps its slice
    (by its hash) from one round to the next, so it is visited every `interval`,
    whoever came or went. A key may be gone by its turn: `visit` looks it up.
    """
    while True:
        buckets: list[list[str]] = [[] for _ in range(slices)]
        for key in keys():
            buckets[hash(key) % slices].append(key)
        for bucket in buckets:
            sleep(interval / slices)
            for key in bucket:
                visit(key)


def wait_until(condition: Callable[[], bool], timeout: float,
               sleep: Callable[[float], None], interval: float = 0.02) -> bool:
    """Poll `condition` cooperatively; False if `timeout` passed first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        sleep(interval)
    return True


class Lifecycle:
    """Set to draining on SIGTERM; read by readiness, connects and every event.

    The in-flight counter is a plain int: greenlets switch only at I/O, never in
    the middle of `+= 1`.
    """

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        # TCP sockets of this worker's open WebSocket connections (see app.sockets.server.wrap_wsgi).
        self.websockets: set[socket.socket] = set()

    def start_draining(self) -> bool:
        """Set draining; False if it already was (SIGTERM reaches a worker from the
        master and from a process-group kill: one drain)."""
        if self.draining:
            return False
        self.draining = True
        return True

    def begin(self) -> None:
        self.in_flight += 1

    def end(self) -> None:
        self.in_flight -= 1

    def wait_idle(self, timeout: float, sleep: Callable[[float], None]) -> bool:
        """Wait (cooperatively) until no handler runs; False if `timeout` passed first."""
        return wait_until(lambda: self.in_flight == 0, timeout, sleep, interval=0.05)

    def cut_websockets(self) -> int:
        """Shut down the TCP connection of every open WebSocket; return how many.

        shutdown() wakes the greenlet reading the socket (it reads EOF), which then
        ends the Engine.IO session and the request, whatever the peer does.
        """
        remaining = list(self.websockets)
        for sock in remaining:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return len(remaining)
