"""Limits against floods: connections per client address, events per socket, attempts.

Events are limited per socket, in memory (no Redis round trip on the hot path).
Connections per address and per user, and attempts (logins), are counted in Redis when
a queue is configured, so they hold across workers and instances (`SharedCounts`); without
one, per worker. Put a global limit in the proxy too (nginx `limit_conn`,
docs/security.md).
"""

from __future__ import annotations

import contextlib
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


# Releases, then admits, for one worker in one step. An admit counts one more connection
# of a field if the sum of that field over the live workers' hashes is below its limit:
# the workers registered in the queue's set (app/core/queue/membership.py) within its
# TTL, and this one. Checked and counted at once: two workers admitting at the same
# instant cannot both pass the last slot; admits of one field in a batch are counted
# one after another. After a failed round trip (its releases lost, or its script run
# with the answer lost) the worker's hash is first written again from its own counts.
# KEYS[1]: that set; ARGV: hash prefix, ttl ms, this worker, hash ttl s, the number of
# fields to write again m (-1: none), m (field, count) pairs, the number of releases n,
# n released fields, then (field, limit) per admit.
# Returns 1 (admitted, counted) or 0 per admit, in order.
_COUNT_SCRIPT = """
local mine = ARGV[1] .. ARGV[3]
local i = 6
local m = tonumber(ARGV[5])
if m >= 0 then
  redis.call('DEL', mine)
  for _ = 1, m do
    redis.call('HSET', mine, ARGV[i], ARGV[i + 1])
    i = i + 2
  end
end
local n = tonumber(ARGV[i])
for j = i + 1, i + n do
  if redis.call('HINCRBY', mine, ARGV[j], -1) <= 0 then redis.call('HDEL', mine, ARGV[j]) end
end
i = i + n + 1
local results = {}
if #ARGV >= i then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local others = {}
  for _, host in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ms - tonumber(ARGV[2]), '+inf')) do
    if host ~= ARGV[3] then others[#others + 1] = ARGV[1] .. host end
  end
  for j = i, #ARGV, 2 do
    local total = tonumber(redis.call('HGET', mine, ARGV[j]) or 0)
    for _, key in ipairs(others) do
      total = total + tonumber(redis.call('HGET', key, ARGV[j]) or 0)
    end
    if total >= tonumber(ARGV[j + 1]) then
      results[#results + 1] = 0
    else
      redis.call('HINCRBY', mine, ARGV[j], 1)
      results[#results + 1] = 1
    end
  end
end
redis.call('EXPIRE', mine, tonumber(ARGV[4]))
return results
"""
# Seconds an admit waits for its batch: past it, admitted and not counted (logged).
ADMIT_WAIT = 10.0


class _Admit:
    __slots__ = ("event", "field", "limit", "result")

    def __init__(self, field: str, limit: int, event) -> None:
        self.field, self.limit, self.event, self.result = field, limit, event, None


class SharedCounts:
    """Open connections counted across workers and instances (with Redis).

    Each worker keeps its own counts in a hash of its own, `<prefix>:<host>`, which
    its heartbeat keeps alive; a total is the sum over the workers registered as live
    (a killed worker's connections stop counting when its registration expires), in one
    script that also counts the connection it admits (two workers admitting at once
    cannot both take the last slot). The worker's admits and releases go in batches,
    one script call per round trip (`create_event` and `spawn` set: a connect storm
    paid a round trip per connect and per disconnect, a third of the worker's time).
    An unreachable Redis lets connections through (logged): the per-worker limit
    still holds.
    """

    def __init__(self, redis: Callable[[], Any], prefix: str, host: str, members_key: str,
                 member_ttl: float) -> None:
        self._redis = redis
        self._prefix = prefix
        self.host = host
        self._members_key = members_key
        self._member_ttl_ms = int(member_ttl * 1000)
        self._script = None
        self.ttl = 60
        self.counts: Counter[str] = Counter()  # what this worker's hash should hold
        # set by the server: () -> an event, and (loop) -> None starting a background
        # task. None: every admit and release is its own round trip.
        self.create_event: Callable[[], Any] | None = None
        self.spawn: Callable[[Callable[[], None]], None] | None = None
        self._admits: list[_Admit] = []
        self._releases: list[str] = []
        self._wakeup = None
        self._rewrite = False  # a round trip failed: write the hash again from `counts`

    def admit(self, field: str, limit: int) -> bool | None:
        """Count one more connection of `field` if the total is below `limit`: True
        (counted) or False (refused); None when Redis could not tell (admitted, not
        counted: logged)."""
        request = _Admit(field, limit, None)
        if self.spawn is None:
            self._count([request], [])
        else:
            request.event = self.create_event()
            self._admits.append(request)
            self._wake()
            if not request.event.wait(ADMIT_WAIT):
                log.warning("connection limit checked on this worker only (no answer from "
                            "the message queue in %.0fs)", ADMIT_WAIT)
                request.result = None
                with contextlib.suppress(ValueError):
                    self._admits.remove(request)
                self._rewrite = True  # (counted there, maybe)
        if request.result:
            self.counts[field] += 1
        return request.result

    def release(self, field: str) -> None:
        """One connection of `field` counted by `admit` is gone (a field at 0 leaves the
        hash, which would otherwise keep every address and user ever seen). Written
        before the next admits of this worker."""
        self.counts[field] -= 1
        if self.counts[field] <= 0:
            del self.counts[field]
        if self.spawn is None:
            self._count([], [field])
        else:
            self._releases.append(field)
            self._wake()

    def _wake(self) -> None:
        if self._wakeup is None:
            self._wakeup = self.create_event()
            self.spawn(self._send_batches)
        self._wakeup.set()

    def _send_batches(self, sleep: Callable[[float], None]) -> None:
        """Background task: whatever was asked meanwhile, in one round trip."""
        wakeup = self._wakeup
        try:
            while True:
                wakeup.wait()
                wakeup.clear()
                admits, self._admits = self._admits, []
                releases, self._releases = self._releases, []
                try:
                    self._count(admits, releases)
                except Exception:  # (not Redis's: logged) this batch goes uncounted
                    log.exception("connection counts not shared")
                    self._rewrite = True
                finally:
                    for request in admits:
                        request.event.set()
        finally:  # killed: the next admit or release starts another
            self._wakeup = None
            for request in self._admits:
                request.event.set()

    def _count(self, admits: list[_Admit], releases: list[str]) -> None:
        """Releases then admits in one script call; each admit gets its result (None
        for all if Redis could not be asked)."""
        args = [self._prefix + ":", self._member_ttl_ms, self.host, self.ttl]
        rewrite = self._rewrite
        if rewrite:  # what the hash holds before this batch's releases
            held = self.counts + Counter(releases)
            args += [len(held), *(x for item in held.items() for x in item)]
        else:
            args.append(-1)
        args += [len(releases), *releases]
        for request in admits:
            args += (request.field, request.limit)
        try:
            if self._script is None:
                self._script = self._redis().register_script(_COUNT_SCRIPT)
            results = self._script(keys=[self._members_key], args=args)
        except RedisError as exc:
            log.warning("connection limits checked on this worker only, %d release(s) not "
                        "shared yet (message queue: %s)", len(releases), exc)
            self._rewrite = True
            return
        if rewrite:
            self._rewrite = False
        for request, counted in zip(admits, results, strict=True):
            request.result = bool(counted)

    def refresh(self) -> None:
        """Keep this worker's hash alive (the heartbeat); a Redis that lost it (a restart
        without persistence) gets it back from the counts here."""
        hash_key = f"{self._prefix}:{self.host}"
        if not self._redis().expire(hash_key, self.ttl) and self.counts:
            pipe = self._redis().pipeline(transaction=False)
            pipe.hset(hash_key, mapping=dict(self.counts))
            pipe.expire(hash_key, self.ttl)
            pipe.execute()


class ConnectionLimit:
    """At most `limit` open connections per key (a client address, a user): in this
    worker, and across workers and instances when `shared` is given."""

    def __init__(self, limit: int, what: str, shared: SharedCounts | None = None) -> None:
        self.limit = limit
        self.what = what
        self.shared = shared
        self.open: Counter[str] = Counter()
        self.key_of: dict[str, str] = {}
        self.counted: set[str] = set()  # connections counted in Redis too

    def admit(self, connection: str, key: str) -> AppError | None:
        if self.open[key] >= self.limit:
            return self._refusal(key)
        # the slot is this worker's before Redis is asked (the call yields to others)
        self.open[key] += 1
        self.key_of[connection] = key
        if self.shared is not None:
            counted = self.shared.admit(f"{self.what}:{key}", self.limit)
            if counted is False:
                self.release(connection)
                return self._refusal(key)
            if counted:
                if self.key_of.get(connection) != key:  # released while Redis was asked
                    self.shared.release(f"{self.what}:{key}")
                else:
                    self.counted.add(connection)
        return None

    def _refusal(self, key: str) -> AppError:
        return AppError(f"too many connections for {self.what} {key}",
                        code="too_many_connections", status=429)

    def release(self, connection: str) -> None:
        key = self.key_of.pop(connection, None)
        if key is None:
            return
        self.open[key] -= 1
        if self.open[key] <= 0:
            del self.open[key]
        if connection in self.counted:  # (not one admitted while Redis could not count it)
            self.counted.discard(connection)
            self.shared.release(f"{self.what}:{key}")


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
