"""A worker's lifecycle state: in-flight event handlers, and draining on shutdown."""

from __future__ import annotations

import time
from collections.abc import Callable


class Lifecycle:
    """Set to draining on SIGTERM; read by readiness, connects and every event.

    The in-flight counter is a plain int: greenlets switch only at I/O, never in
    the middle of `+= 1`.
    """

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0

    def begin(self) -> None:
        self.in_flight += 1

    def end(self) -> None:
        self.in_flight -= 1

    def wait_idle(self, timeout: float, sleep: Callable[[float], None]) -> bool:
        """Wait (cooperatively) until no handler runs; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while self.in_flight > 0:
            if time.monotonic() >= deadline:
                return False
            sleep(0.05)
        return True
