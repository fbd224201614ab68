"""Recent messages per room, for `join` (recent history, or what was missed `since` an
id) and `GET /api/rooms/<room>/messages?after=`.

With a queue configured: one Redis Stream per room, `<channel>:history:<room>`, trimmed
to about HISTORY_MAX_LENGTH entries on every append and expired when the room has been
quiet for HISTORY_MAX_AGE_SECONDS (older entries are also left out of reads). Without a
queue: the same in this process's memory. A message is stored before it is sent, and
its stream id (`stream_id`, "<ms>-<n>", ordered per room) goes with it.

A read after an id says whether it is complete: not when messages after that id were
trimmed away (Redis's `max-deleted-entry-id`) or are older than the age limit. A Redis
without persistence loses history when it restarts (enable AOF for history that must
outlive it).
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from app.core.errors import QueueUnavailable


def parse_id(stream_id: str) -> tuple[int, int]:
    """ "<ms>-<n>" -> (ms, n); ValueError otherwise."""
    ms, _, n = stream_id.partition("-")
    return int(ms), int(n or 0)


class History:
    def __init__(self, redis: Callable[[], Any] | None, prefix: str, max_length: int,
                 max_age: float) -> None:
        self._redis = redis
        self._prefix = prefix
        self.max_length = max_length
        self.max_age = max_age
        # memory: room -> deque of (id, message), and the newest id trimmed per room
        self._rooms: dict[str, collections.deque] = {}
        self._trimmed: dict[str, tuple[int, int]] = {}
        self._last = (0, 0)

    @property
    def enabled(self) -> bool:
        return self.max_length > 0

    def _key(self, room: str) -> str:
        return f"{self._prefix}:history:{room}"

    def _oldest_kept(self) -> tuple[int, int]:
        return int((time.time() - self.max_age) * 1000), 0

    # --- writing ------------------------------------------------------------
    def append(self, room: str, message: dict) -> str:
        """Store `message`; set and return its stream id."""
        if self._redis is None:
            return self._append_memory(room, message)
        try:
            pipe = self._redis().pipeline(transaction=False)
            pipe.xadd(self._key(room), {"m": json.dumps(message)}, maxlen=self.max_length,
                      approximate=True)
            pipe.pexpire(self._key(room), int(self.max_age * 1000))
            stream_id = pipe.execute()[0]
        except RedisError as exc:
            raise QueueUnavailable(f"the message could not be stored: {exc}") from exc
        stream_id = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
        message["stream_id"] = stream_id
        return stream_id

    def _append_memory(self, room: str, message: dict) -> str:
        ms = int(time.time() * 1000)
        last_ms, last_n = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, last_n + 1)
        stream_id = f"{self._last[0]}-{self._last[1]}"
        message["stream_id"] = stream_id
        entries = self._rooms.setdefault(room, collections.deque())
        entries.append((self._last, message))
        while len(entries) > self.max_length:
            self._trimmed[room] = entries.popleft()[0]
        return stream_id

    # --- reading ------------------------------------------------------------
    def recent(self, room: str, limit: int) -> list[dict]:
        """The last `limit` messages of the room, oldest first."""
        if limit <= 0:
            return []
        oldest = self._oldest_kept()
        if self._redis is None:
            entries = list(self._rooms.get(room, ()))[-limit:]
            return [m for key, m in entries if key >= oldest]
        entries = self._read(lambda r: r.xrevrange(self._key(room), count=limit))
        return [m for key, m in reversed(entries) if key >= oldest]

    def after(self, room: str, after: str, limit: int) -> tuple[list[dict], bool]:
        """Up to `limit` messages after id `after`, oldest first, and whether nothing
        after it is missing (False: trimmed or expired: resync from `recent`)."""
        start = parse_id(after)
        oldest = self._oldest_kept()
        if self._redis is None:
            entries = [(k, m) for k, m in self._rooms.get(room, ()) if k > start]
            trimmed = self._trimmed.get(room, (0, 0))
        else:
            entries, trimmed = self._read_after(room, after, limit)
        # nothing after `after` was trimmed away, and `after` is within the age limit
        # (older: what followed it may have expired with the room's stream)
        complete = trimmed <= start and start >= oldest
        return [m for key, m in entries if key >= oldest][:limit], complete

    def _read_after(self, room: str, after: str, limit: int):
        def read(r):
            pipe = r.pipeline(transaction=False)
            pipe.xrange(self._key(room), min=f"({after}", count=limit)
            pipe.xinfo_stream(self._key(room))  # an error when the stream does not exist
            return pipe.execute(raise_on_error=False)

        rows, info = self._raw(read)
        if isinstance(rows, Exception):
            raise QueueUnavailable(f"history could not be read: {rows}")
        deleted = (0, 0)
        if isinstance(info, dict):
            value = info.get("max-deleted-entry-id", b"0-0")
            deleted = parse_id(value.decode() if isinstance(value, bytes) else str(value))
        return self._decode(rows), deleted

    def _read(self, command) -> list[tuple[tuple[int, int], dict]]:
        return self._decode(self._raw(command))

    def _raw(self, command):
        try:
            return command(self._redis())
        except RedisError as exc:
            raise QueueUnavailable(f"history could not be read: {exc}") from exc

    @staticmethod
    def _decode(rows) -> list[tuple[tuple[int, int], dict]]:
        entries = []
        for stream_id, fields in rows or ():
            stream_id = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
            message = json.loads(fields.get(b"m", fields.get("m")))
            message["stream_id"] = stream_id
            entries.append((parse_id(stream_id), message))
        return entries
