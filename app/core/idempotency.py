"""Exactly-once sends: a `message` with a `client_id`, retried (after a timeout, a
`queue_unavailable`, a `delivery_incomplete` or a reconnect), is delivered once and answered with the first
result, across workers, within IDEMPOTENCY_WINDOW_SECONDS.

Two halves:
- `Claims` (Redis with a queue, memory otherwise): the first attempt claims
  `<user>:<client_id>` and records its message (same id, same stream id); a retry
  gets that record: the message again if it was sent, or the same message to send
  again if the first attempt did not finish (a crash, a failed publish).
- `SeenMessages` (per worker): a message sent again reaches every worker again, and
  each delivers a given message id once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from app.core.errors import QueueUnavailable

PENDING, SENT = "pending", "sent"


class Claims:
    def __init__(self, redis: Callable[[], Any] | None, prefix: str, window: float) -> None:
        self._redis = redis
        self._prefix = prefix
        self.window = window
        self._records: dict[str, tuple[float, dict]] = {}  # memory: key -> (expiry, record)

    def key(self, key: str) -> str:
        return f"{self._prefix}:once:{key}"

    def claim(self, key: str, message: dict) -> dict | None:
        """None for the first attempt (`message` is now recorded as pending), else the
        record of the first attempt: {"state": pending|sent, "message": {...}}."""
        record = {"state": PENDING, "message": message}
        if self._redis is None:
            now = time.monotonic()
            if len(self._records) > 10_000:
                self._records = {k: v for k, v in self._records.items() if v[0] > now}
            expiry, existing = self._records.get(key, (0.0, None))
            if existing is not None and expiry > now:
                return existing
            self._records[key] = (now + self.window, record)
            return None
        try:
            r = self._redis()
            if r.set(self.key(key), json.dumps(record), px=int(self.window * 1000), nx=True):
                return None
            raw = r.get(self.key(key))
        except RedisError as exc:
            raise QueueUnavailable(f"the message queue is unavailable: {exc}") from exc
        return json.loads(raw) if raw is not None else self.claim(key, message)

    def record(self, key: str, state: str, message: dict) -> None:
        record = {"state": state, "message": message}
        if self._redis is None:
            if key in self._records:
                self._records[key] = (self._records[key][0], record)
            return
        try:  # keep the claim's expiry
            self._redis().set(self.key(key), json.dumps(record), xx=True, keepttl=True)
        except RedisError as exc:
            raise QueueUnavailable(f"the message queue is unavailable: {exc}") from exc


class SeenMessages:
    """Message ids this worker delivered recently (only messages that carry a
    `client_id`: only those can be sent twice)."""

    def __init__(self, window: float, limit: int = 100_000) -> None:
        self.window = window
        self.limit = limit
        self._seen: dict[str, float] = {}

    def first_time(self, message_id: str) -> bool:
        now = time.monotonic()
        if message_id in self._seen and self._seen[message_id] > now:
            return False
        if len(self._seen) >= self.limit:
            self._seen = {k: t for k, t in self._seen.items() if t > now}
        self._seen[message_id] = now + self.window
        return True
