"""Limits against floods: connections per client address, events per socket.

Both are per worker (kept in memory, no Redis round trip on the hot path): with W
workers an address can hold up to W x MAX_CONNECTIONS_PER_ADDRESS connections. Put
a global limit in the proxy too (nginx `limit_conn`, docs/security.md).
"""

from __future__ import annotations

import time
from collections import Counter

from app.core.errors import AppError


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
