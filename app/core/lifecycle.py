"""A worker's lifecycle state: in-flight event handlers, and draining on shutdown."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import socket
import time
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)


# A supervised loop that failed this many times in a row, each within CRASH_LOOP_SECONDS
# of its start, and last failed less than CRASH_LOOP_SECONDS ago, cannot run: readiness
# says so (GET /api/ready) until it has run that long.
CRASH_LOOP_FAILURES = 3
CRASH_LOOP_SECONDS = 10.0
# name -> (failures in a row, the last error, when it last failed): this process's
_failing: dict[str, tuple[int, str, float]] = {}


def supervised(sleep: Callable[[float], None], loop: Callable[..., None], *args) -> None:
    """Run a worker's background loop for the worker's life: an unexpected error is
    logged and the loop started again (a dead pinger, watchdog or publisher would
    silently stop its duty for every client of the worker); one that keeps failing is
    reported by `failing_tasks` (readiness)."""
    name = getattr(loop, "__qualname__", repr(loop))
    while True:
        started = time.monotonic()
        try:
            loop(*args)
            return
        except Exception as exc:
            log.exception("background task %s failed: restarting it", name)
            now = time.monotonic()
            count, _, _ = _failing.get(name, (0, "", 0.0))
            count = count + 1 if now - started < CRASH_LOOP_SECONDS else 1
            # (cut: readiness is answered to anyone who asks)
            _failing[name] = (count, f"{exc.__class__.__name__}: {exc}"[:200], now)
            sleep(0.5)


def failing_tasks(now: float | None = None) -> str | None:
    """The background loops of this worker that cannot run (crash-looping), or None."""
    now = time.monotonic() if now is None else now
    stuck = [f"{name} ({count} failures in a row, last: {error})"
             for name, (count, error, at) in _failing.items()
             if count >= CRASH_LOOP_FAILURES and now - at < CRASH_LOOP_SECONDS]
    return "failing: " + "; ".join(stuck) if stuck else None


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
    whoever came or went. A key may be gone by its turn: `visit` looks it up. A
    `sleep` that returns True (an event's `wait`, set) ends the sweep.
    """
    while True:
        buckets: list[list[str]] = [[] for _ in range(slices)]
        for key in keys():
            buckets[hash(key) % slices].append(key)
        for bucket in buckets:
            if sleep(interval / slices):
                return
            for key in bucket:
                visit(key)


class Deadlines:
    """Calls due at given times (`time.monotonic()`), made by one background task.

    What a sweep over every socket found once a second (a ping due, a token near its
    expiry) costs this way only the calls that fall due: at 5,000 sockets per worker
    the sweeps had been about a sixth of a busy worker's time (docs/performance.md).
    Nothing is removed when its socket leaves or its time changes: each call checks
    that it still applies. The task starts at the first `at()` (in the worker, never
    before the fork) and again after it was killed.
    """

    def __init__(self, spawn: Callable[..., object], sleep: Callable[[float], None],
                 resolution: float = 0.1, chunk: int = 256) -> None:
        self._spawn = spawn
        self._sleep = sleep
        self.resolution = resolution  # how late a call may be
        self.chunk = chunk  # calls in a row before the others get a turn
        self._heap: list[tuple[float, int, Callable[..., None], tuple]] = []
        self._order = itertools.count()  # equal times: first added, first made
        self._task = None

    def __len__(self) -> int:
        return len(self._heap)

    def at(self, when: float, call: Callable[..., None], *args) -> None:
        heapq.heappush(self._heap, (when, next(self._order), call, args))
        if self._task is None:
            self._task = self._spawn(self._run)

    def _run(self) -> None:
        try:
            while True:
                self._sleep(self.resolution)
                self.run_due()
        finally:  # killed: the next `at()` starts another
            self._task = None

    def run_due(self, now: float | None = None) -> int:
        """Make every call due by `now`; how many."""
        heap, made = self._heap, 0
        now = time.monotonic() if now is None else now
        while heap and heap[0][0] <= now:
            _, _, call, args = heapq.heappop(heap)
            try:
                call(*args)
            except Exception:  # one socket's failure must not stop the others' calls
                log.exception("deadline call %s%r failed", getattr(call, "__name__", call), args)
            made += 1
            if made % self.chunk == 0:  # thousands due at once (a connect storm's pings)
                self._sleep(0)
        return made


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
        self.drained = False  # the drain has finished (app/worker.py waits for it)
        self.in_flight = 0
        # TCP sockets of this worker's WebSocket requests in progress: upgrades, and
        # connections the async library's server reads (app.sockets.server.wrap_wsgi;
        # the template's transport keeps its open ones itself).
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

    def cut_websockets(self, others: Iterable[socket.socket] = ()) -> int:
        """Shut down the TCP connection of every open WebSocket (those of requests still
        open, and `others`: the transport's, read without a request); return how many.

        shutdown() wakes whatever reads the socket (it reads EOF), which then ends the
        Engine.IO session, whatever the peer does.
        """
        remaining = [*self.websockets, *others]
        for sock in remaining:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return len(remaining)
