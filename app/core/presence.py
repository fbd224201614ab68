"""Who is in each chat room, across workers and instances: users (id, name) and how
many sockets each has there. `presence` events go to the room once per user: when
their first socket enters (join), when their last one leaves (leave).

With a queue configured, in Redis:
- `<prefix>:presence:<room>` (hash): user id -> sockets in the room on every worker,
  changed with HINCRBY, so that "first" and "last" are decided atomically;
- `<prefix>:presence:<room>:names` (hash): user id -> display name;
- `<prefix>:presence:worker:<host>` (hash): "<room>\\x1f<user>" -> this worker's share,
  refreshed by the worker's heartbeat (expires PRESENCE_TTL after it stops).
When a worker disappears (SIGKILL: app/core/queue.py's membership), one surviving
worker (an atomic claim) takes its shares off the room counts and sends the leave
events. Without a queue the same bookkeeping lives in memory.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from app.core.errors import QueueUnavailable

log = logging.getLogger(__name__)

SEP = "\x1f"
# A dead worker's shares stay readable this long (seconds) for the survivors to reap.
PRESENCE_TTL = 60


class Presence:
    def __init__(self, redis: Callable[[], Any] | None, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self.host = "local"
        # this worker's share: (room, user) -> sockets; user names; the memory totals
        self.local: Counter[tuple[str, str]] = Counter()
        self.names: dict[str, str] = {}
        self._totals: dict[str, Counter[str]] = {}
        self._suspects: set[str] = set()  # workers with shares, absent at the last beat

    def _room_key(self, room: str) -> str:
        return f"{self._prefix}:presence:{room}"

    def _worker_key(self, host: str) -> str:
        return f"{self._prefix}:presence:worker:{host}"

    # --- changes (each returns True when the user's first/last socket moved) ---
    def add(self, room: str, user_id: str, name: str) -> bool:
        self.local[room, user_id] += 1
        self.names[user_id] = name
        return self._change(room, user_id, name, +1) == 1

    def remove(self, room: str, user_id: str) -> bool:
        self.local[room, user_id] -= 1
        if self.local[room, user_id] <= 0:
            del self.local[room, user_id]
        return self._change(room, user_id, None, -1) == 0

    def _change(self, room: str, user_id: str, name: str | None, delta: int) -> int:
        if self._redis is None:
            totals = self._totals.setdefault(room, Counter())
            totals[user_id] += delta
            left = totals[user_id]
            if left <= 0:
                del totals[user_id]
            return left
        share = self.local.get((room, user_id), 0)
        try:
            pipe = self._redis().pipeline(transaction=True)
            pipe.hincrby(self._room_key(room), user_id, delta)
            if name is not None:
                pipe.hset(self._room_key(room) + ":names", user_id, name)
            field = f"{room}{SEP}{user_id}"
            if share:
                pipe.hset(self._worker_key(self.host), field, share)
            else:
                pipe.hdel(self._worker_key(self.host), field)
            pipe.expire(self._worker_key(self.host), PRESENCE_TTL)
            left = int(pipe.execute()[0])
            if left <= 0:
                self._forget(self._redis(), room, user_id)
        except RedisError as exc:
            raise QueueUnavailable(f"presence could not be updated: {exc}") from exc
        return left

    # --- reading -----------------------------------------------------------
    def members(self, room: str) -> list[dict]:
        """[{id, name, sockets}] of the room, by user id."""
        if self._redis is None:
            counts = dict(self._totals.get(room, {}))
            names = self.names
        else:
            try:
                pipe = self._redis().pipeline(transaction=False)
                pipe.hgetall(self._room_key(room))
                pipe.hgetall(self._room_key(room) + ":names")
                raw_counts, raw_names = pipe.execute()
            except RedisError as exc:
                raise QueueUnavailable(f"presence could not be read: {exc}") from exc
            counts = {k.decode(): int(v) for k, v in raw_counts.items()}
            names = {k.decode(): v.decode() for k, v in raw_names.items()}
        return [{"id": user, "name": names.get(user, user), "sockets": n}
                for user, n in sorted(counts.items()) if n > 0]

    # --- workers that died ----------------------------------------------------
    def heartbeat(self, alive: set[str]) -> list[tuple[str, str, str]]:
        """Each heartbeat (with a fresh view of the live workers): keep this worker's
        shares alive, and reap the shares of workers that are gone (absent from the
        live set in two heartbeats in a row: a worker just starting is not in it yet).
        Returns the (room, user id, name) whose last socket was on a reaped worker."""
        if self._redis is None:
            return []
        r = self._redis()
        if self.local:
            r.expire(self._worker_key(self.host), PRESENCE_TTL)
        prefix = self._worker_key("")
        hosts = {key.decode()[len(prefix):] for key in r.scan_iter(prefix + "*", count=1000)}
        orphans = {host for host in hosts
                   if host != self.host and ":" not in host and host not in alive}
        gone = []
        for host in orphans & self._suspects:
            gone.extend(self.reap(host))
        self._suspects = orphans
        return gone

    def reap(self, host: str) -> list[tuple[str, str, str]]:
        """Take a gone worker's shares off the room counts (once, whichever worker gets
        there first); return the (room, user id, name) whose last socket that was."""
        if self._redis is None:
            return []
        r = self._redis()
        if not r.set(f"{self._worker_key(host)}:reaped", 1, nx=True, ex=PRESENCE_TTL):
            return []
        shares = r.hgetall(self._worker_key(host))
        r.delete(self._worker_key(host))
        gone = []
        for field, count in shares.items():
            room, _, user_id = field.decode().partition(SEP)
            left = r.hincrby(self._room_key(room), user_id, -int(count))
            if left <= 0:
                name = r.hget(self._room_key(room) + ":names", user_id)
                self._forget(r, room, user_id)
                gone.append((room, user_id, name.decode() if name else user_id))
        return gone

    def _forget(self, r, room: str, user_id: str) -> None:
        pipe = r.pipeline(transaction=False)
        pipe.hdel(self._room_key(room), user_id)
        pipe.hdel(self._room_key(room) + ":names", user_id)
        pipe.execute()
