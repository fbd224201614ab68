"""Who is in each chat room, across workers and instances: users (id, name) and how
many sockets each has there. `presence` events go to the room once per user: when
their first socket enters (join), when their last one leaves (leave).

With a queue configured, in Redis:
- `<prefix>:presence:<room>` (hash): user id -> sockets in the room on every worker,
  changed with HINCRBY, so that "first" and "last" are decided atomically;
- `<prefix>:presence:<room>:names` (hash): user id -> display name;
- `<prefix>:presence:worker:<host>` (hash): "<room>\\x1f<user>" -> this worker's share,
  refreshed by the worker's heartbeat (expires PRESENCE_TTL after it stops);
- `<prefix>:presence:workers` (set): the hosts that have shares, read by the heartbeat
  (never a scan of the keyspace).
Each change is one script (the count, the name, the worker's share), so a count that
reaches 0 is deleted in the same step: a join on another worker cannot fall between.
When a worker disappears (SIGKILL: app/core/queue/membership.py), one surviving
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
from app.core.queue.membership import AbsentTwice

log = logging.getLogger(__name__)

SEP = "\x1f"
# A dead worker's shares stay readable this long (seconds) for the survivors to reap.
PRESENCE_TTL = 60

# One user's sockets in a room change by `delta` on this worker. KEYS: room counts,
# room names, this worker's shares, the set of workers with shares. ARGV: user, delta,
# name ('' to keep), share field, this worker's share now, ttl, host. Returns what is left.
_CHANGE_SCRIPT = """
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if left <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
elseif ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
if tonumber(ARGV[5]) > 0 then
  redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
else
  redis.call('HDEL', KEYS[3], ARGV[4])
end
redis.call('EXPIRE', KEYS[3], ARGV[6])
redis.call('SADD', KEYS[4], ARGV[7])
return left
"""

# Take a gone worker's shares off the room counts, once. KEYS: its shares, the reaped
# marker, the set of workers. ARGV: ttl, host, room key prefix. Returns a flat list of
# (room, user, name) whose last socket was there.
_REAP_SCRIPT = """
if not redis.call('SET', KEYS[2], 1, 'NX', 'EX', ARGV[1]) then return {} end
local shares = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[2])
local gone = {}
for i = 1, #shares, 2 do
  local at = string.find(shares[i], '\\31', 1, true)
  if at then
    local room, user = string.sub(shares[i], 1, at - 1), string.sub(shares[i], at + 1)
    local counts = ARGV[3] .. room
    if redis.call('HINCRBY', counts, user, -tonumber(shares[i + 1])) <= 0 then
      local name = redis.call('HGET', counts .. ':names', user)
      redis.call('HDEL', counts, user)
      redis.call('HDEL', counts .. ':names', user)
      table.insert(gone, room)
      table.insert(gone, user)
      table.insert(gone, name or user)
    end
  end
end
return gone
"""


class Presence:
    def __init__(self, redis: Callable[[], Any] | None, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self.host = "local"
        # this worker's share: (room, user) -> sockets; user names; the memory totals
        self.local: Counter[tuple[str, str]] = Counter()
        self.names: dict[str, str] = {}
        self._totals: dict[str, Counter[str]] = {}
        self._absent = AbsentTwice()  # workers with shares, absent at the last beat
        self._workers_key = f"{prefix}:presence:workers"
        self._change_script = None
        self._reap_script = None

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
            if self._change_script is None:
                self._change_script = self._redis().register_script(_CHANGE_SCRIPT)
            keys = [self._room_key(room), self._room_key(room) + ":names",
                    self._worker_key(self.host), self._workers_key]
            return int(self._change_script(keys=keys, args=[
                user_id, delta, name or "", f"{room}{SEP}{user_id}", share, PRESENCE_TTL,
                self.host]))
        except RedisError as exc:
            raise QueueUnavailable(f"presence could not be updated: {exc}") from exc

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
        pipe = r.pipeline(transaction=False)
        if self.local:
            pipe.expire(self._worker_key(self.host), PRESENCE_TTL)
            pipe.sadd(self._workers_key, self.host)  # (back after a Redis restart too)
        pipe.smembers(self._workers_key)
        hosts = {host.decode() for host in pipe.execute()[-1]}
        gone = []
        for host in self._absent.gone(hosts, alive, self.host):
            gone.extend(self.reap(host))
        return gone

    def reap(self, host: str) -> list[tuple[str, str, str]]:
        """Take a gone worker's shares off the room counts (once, whichever worker gets
        there first); return the (room, user id, name) whose last socket that was."""
        if self._redis is None:
            return []
        if self._reap_script is None:
            self._reap_script = self._redis().register_script(_REAP_SCRIPT)
        flat = self._reap_script(
            keys=[self._worker_key(host), f"{self._worker_key(host)}:reaped", self._workers_key],
            args=[PRESENCE_TTL, host, self._room_key("")])
        flat = [v.decode() if isinstance(v, bytes) else v for v in flat]
        return [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]
