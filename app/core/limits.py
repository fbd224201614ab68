"""Limits against floods: connections per client address, events per socket, attempts.

Connections and events are per worker (kept in memory, no Redis round trip on the hot
path): with W workers an address can hold up to W x MAX_CONNECTIONS_PER_ADDRESS
connections. Put a global limit in the proxy too (nginx `limit_conn`,
docs/security.md). Attempts (logins) are counted in Redis when a queue is configured,
so they hold across workers and instances.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from app.core.errors import AppError

log = logging.getLogger(__name__)


def client_address(environ: dict, proxy_hops: int) -> str:
    """The client's address: REMOTE_ADDR, or with `proxy_hops` trusted proxies in
    front, the address the outermost of them saw (from X-Forwarded-For)."""
    if proxy_hops > 0:
        forwarded = [a.strip() for a in environ.get("HTTP_X_FORWARDED_FOR", "").split(",")
                     if a.strip()]
        if len(forwarded) >= proxy_hops:
            return forwarded[-proxy_hops]
    return environ.get("REMOTE_ADDR", "unknown")


class ConnectionLimit:
    """At most `limit` open Engine.IO connections per client address, in this worker."""

    def __init__(self, limit: int, proxy_hops: int) -> None:
        self.limit = limit
        self.proxy_hops = proxy_hops
        self.per_address: Counter[str] = Counter()
        self.address_of: dict[str, str] = {}

    def admit(self, eio_sid: str, environ: dict) -> AppError | None:
        address = client_address(environ, self.proxy_hops)
        if self.per_address[address] >= self.limit:
            return AppError(f"too many connections from {address}", code="too_many_connections",
                            status=429)
        self.per_address[address] += 1
        self.address_of[eio_sid] = address
        return None

    def release(self, eio_sid: str) -> None:
        address = self.address_of.pop(eio_sid, None)
        if address is not None:
            self.per_address[address] -= 1
            if self.per_address[address] <= 0:
                del self.per_address[address]


class TokenBucket:
    """`rate` events per second on average, bursts of up to `burst`."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def take(self) -> float:
        """0.0 when allowed, else the seconds to wait before the next event."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def rate_limited(retry_after: float, what: str) -> AppError:
    """The error every limit answers with: REST 429 with Retry-After, or an error ack."""
    return AppError(f"too many {what}: slow down", code="rate_limited", status=429,
                    details={"retry_after": round(max(retry_after, 0.001), 3)})


class AttemptLimit:
    """At most `limit` attempts per key in a fixed window of `window` seconds.

    In Redis (INCR + EXPIRE) when a client is given, else in this process's memory.
    An unreachable Redis lets attempts through (logged): a queue outage must not
    lock every user out.
    """

    def __init__(self, redis: Callable[[], Any] | None, prefix: str, window: float = 60.0) -> None:
        self._redis = redis
        self._prefix = prefix
        self.window = window
        self._counts: dict[str, tuple[float, int]] = {}  # key -> (window end, count)

    def count(self, key: str, add: int = 1, window: float | None = None) -> tuple[int, float]:
        """Add `add` attempts (0: just read); return (attempts in the window, seconds left)."""
        window = self.window if window is None else window
        if self._redis is not None:
            try:
                return self._count_redis(f"{self._prefix}:{key}", add, window)
            except RedisError as exc:
                log.warning("attempt limit not checked (message queue: %s)", exc)
                return 0, 0.0
        now = time.monotonic()
        end, attempts = self._counts.get(key, (0.0, 0))
        if end <= now:
            end, attempts = now + window, 0
            if len(self._counts) > 10_000:  # expired windows go once the table is large
                self._counts = {k: v for k, v in self._counts.items() if v[0] > now}
        attempts += add
        if add:
            self._counts[key] = (end, attempts)
        return attempts, end - now

    def _count_redis(self, key: str, add: int, window: float) -> tuple[int, float]:
        pipe = self._redis().pipeline(transaction=False)
        pipe.incrby(key, add) if add else pipe.get(key)
        pipe.pttl(key)
        attempts, ttl = pipe.execute()
        attempts = int(attempts or 0)
        if attempts and ttl < 0:  # new key (or one that lost its expiry): window starts
            self._redis().pexpire(key, int(window * 1000))
            ttl = int(window * 1000)
        return attempts, max(ttl, 0) / 1000

    def check(self, key: str, limit: int, what: str, add: int = 1,
              window: float | None = None) -> None:
        """Count `add` attempts for `key`; raise rate_limited once over `limit`."""
        attempts, left = self.count(key, add, window)
        if attempts > limit or (not add and attempts >= limit):
            raise rate_limited(left, what)
