"""Outages of the message queue, logged once when they start and once when they end."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("app.core.queue")


class Outage:
    """One log line when the queue fails, one when it works again, with counts."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.refused = 0

    def failed(self, exc: Exception) -> bool:
        """Record a failure; True if it starts an outage."""
        if self.since is not None:
            return False
        self.since = time.monotonic()
        self.refused = 0
        log.warning("%s: message queue unavailable (%s: %s)", self.what,
                    exc.__class__.__name__, exc)
        return True

    def restored(self) -> bool:
        """Record a success; True if it ends an outage."""
        if self.since is None:
            return False
        refused = f" ({self.refused} publish(es) refused meanwhile)" if self.refused else ""
        log.warning("%s: message queue back after %.1fs%s", self.what,
                    time.monotonic() - self.since, refused)
        self.since = None
        return True
