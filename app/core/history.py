"""The event log: every event broadcast to a logged room, in one order across rooms.

It backs three features: a room's recent messages (`join`, `GET
/api/rooms/<room>/messages`), `join` with `since` (what followed a message), and
Socket.IO connection-state recovery (app/core/recovery.py: what a socket missed
after the offset its client last saw).

With a queue configured: one Redis Stream per (namespace, room),
`<channel>:log:<namespace>:<room>` (`*` for namespace-wide broadcasts), trimmed to
about HISTORY_MAX_LENGTH entries on every append and expired when the room has been
quiet for HISTORY_MAX_AGE_SECONDS (older entries are also left out of reads). The
append is made by the queue's ordered publisher, in the same Lua script as the
PUBLISH (app/core/queue/scripts.py, `APPEND_SCRIPT`), so that:

- ids are in one order per partition of the queue (app/core/queue/partitions.py;
  one by default): its counter (`<channel>:log:last`) gives every entry of its rooms
  an id ("<ms>-<n>") greater than any before it, so one id per partition (a socket's
  offset) says how far a client got in all of its rooms at once;
- the channel carries the events in id order, and every worker delivers them in that
  order, its own included (they come back through its subscription);
- an event is stored if and only if it was published (no stored-but-never-sent or
  sent-but-never-stored entries), in one round trip pipelined with the rest.

Without a queue: the same in this process's memory.

A read after an id says whether it is complete: not when entries after that id were
trimmed away (Redis's `max-deleted-entry-id`) or are older than the age limit. A Redis
without persistence loses the log when it restarts (enable AOF for history that must
outlive it).
"""

from __future__ import annotations

import collections
import heapq
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from redis.exceptions import RedisError

from app.core.errors import QueueUnavailable

CHAT_MESSAGE = "message"  # the event a room's history is made of


def parse_id(stream_id: str) -> tuple[int, int]:
    """ "<ms>-<n>" -> (ms, n); ValueError otherwise."""
    ms, _, n = stream_id.partition("-")
    return int(ms), int(n or 0)


def _deleted(info) -> tuple[int, int]:
    """The newest id trimmed from a stream (XINFO STREAM's reply; (0, 0) when the
    stream does not exist: the reply is then an error)."""
    if not isinstance(info, dict):
        return 0, 0
    value = info.get("max-deleted-entry-id", b"0-0")
    return parse_id(value.decode() if isinstance(value, bytes) else str(value))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# What a recovering socket missed, at one instant, within a budget. KEYS: the streams;
# ARGV: after id (exclusive), most entries, most bytes. Returns, per stream, its newest
# trimmed id and its entries after the id; or an empty list past the budget (the
# reading stops there: a socket in 50 busy rooms no longer reads 50,000 entries).
_SNAPSHOT_SCRIPT = """
local limit, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
local n, bytes, out = 0, 0, {}
for _, key in ipairs(KEYS) do
  local deleted = '0-0'
  if redis.call('EXISTS', key) == 1 then
    local info = redis.call('XINFO', 'STREAM', key)
    for i = 1, #info, 2 do
      if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
    end
  end
  local rows = redis.call('XRANGE', key, '(' .. ARGV[1], '+', 'COUNT', limit - n + 1)
  for _, row in ipairs(rows) do
    n = n + 1
    for _, value in ipairs(row[2]) do bytes = bytes + #value end
    if n > limit or bytes > budget then return {} end
  end
  table.insert(out, deleted)
  table.insert(out, rows)
end
return out
"""


def format_id(key: tuple[int, int]) -> str:
    return f"{key[0]}-{key[1]}"


class Entry:
    """One logged event: its id, name, arguments and the socket it skipped."""

    __slots__ = ("data", "event", "id", "key", "skip_sid")

    def __init__(self, id: str, event: str, data: list, skip_sid: Any = None) -> None:
        self.id = id
        self.key = parse_id(id)
        self.event = event
        self.data = data
        self.skip_sid = skip_sid

    def message(self) -> dict | None:
        """The chat message this entry carries, with its stream_id (else None)."""
        if self.event != CHAT_MESSAGE or not self.data or not isinstance(self.data[0], dict):
            return None
        return {**self.data[0], "stream_id": self.id}

    @staticmethod
    def fields(event: str, data: list, skip_sid: Any) -> str:
        return json.dumps({"e": event, "d": data, "x": skip_sid}, separators=(",", ":"))

    @classmethod
    def decode(cls, stream_id, fields) -> Entry:
        stream_id = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
        raw = json.loads(fields.get(b"m", fields.get("m")))
        return cls(stream_id, raw["e"], raw["d"], raw.get("x"))


class EventLog:
    def __init__(self, redis: Callable[[], Any] | None, prefix: str, max_length: int,
                 max_age: float) -> None:
        self._redis = redis
        self.prefix = prefix
        self.max_length = max_length
        self.max_age = max_age
        # memory: key -> deque of entries, and the newest id trimmed per key
        self._streams: dict[str, collections.deque[Entry]] = {}
        self._trimmed: dict[str, tuple[int, int]] = {}
        self._last = (0, 0)
        # namespace -> prefix of the rooms whose broadcasts are logged (set by the
        # namespaces that ask for it: BaseNamespace.logged_rooms)
        self.logged: dict[str, str] = {}
        self._snapshot = None  # _SNAPSHOT_SCRIPT, registered on first use
        # A partitioned queue's (app/core/queue/partitions.py): this log's partition,
        # and whether a room is in it (its stream is kept by that partition's log).
        self.partition = 0
        self.owns: Callable[[str, Any], bool] = lambda namespace, room: True

    # --- the rooms' logs (one log: all of them; PartitionedLog: by partition) ---
    @property
    def logs(self) -> list[EventLog]:
        return [self]

    def of(self, namespace: str, room: Any) -> EventLog:
        """The log that keeps a room's stream."""
        return self

    def by_key(self, key: str) -> EventLog:
        return self

    @property
    def enabled(self) -> bool:
        return self.max_length > 0

    @property
    def last_key(self) -> str:
        return f"{self.prefix}:log:last"

    def key(self, namespace: str, room: str | None) -> str:
        return f"{self.prefix}:log:{namespace}:{'*' if room is None else room}"

    def key_for(self, namespace: str, room: Any) -> str | None:
        """The log of a broadcast, or None when it is not logged (a socket's own room,
        a namespace that does not log, several rooms at once)."""
        if self.enabled and self.logs_room(namespace, room) and self.owns(namespace, room):
            return self.key(namespace, room)
        return None

    def logs_room(self, namespace: str, room: Any) -> bool:
        """Is `room` one of the namespace's logged rooms (None: its announcements)?"""
        prefix = self.logged.get(namespace)
        return prefix is not None and (room is None or (isinstance(room, str)
                                                        and room.startswith(prefix)))

    def _oldest_kept(self) -> tuple[int, int]:
        return int((time.time() - self.max_age) * 1000), 0

    # --- writing (memory; with Redis the queue appends) ----------------------
    def append_memory(self, key: str, event: str, data: list, skip_sid: Any) -> str:
        ms = int(time.time() * 1000)
        last_ms, last_n = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, last_n + 1)
        entry = Entry(format_id(self._last), event, data, skip_sid)
        entries = self._streams.setdefault(key, collections.deque())
        entries.append(entry)
        while len(entries) > self.max_length:
            self._trimmed[key] = entries.popleft().key
        return entry.id

    # --- reading --------------------------------------------------------------
    def after(self, keys: Iterable[str], after: str, limit: int | None = None,
              events: str | None = None) -> tuple[list[Entry], bool]:
        """Entries of `keys` after id `after`, oldest first, merged across keys (up to
        `limit` of event `events` when given), and whether nothing after it is
        missing (False: trimmed or expired)."""
        start = parse_id(after)
        oldest = self._oldest_kept()
        complete = start >= oldest
        streams = []
        for key in keys:
            entries, trimmed = self._read_after(key, after, limit, events)
            complete = complete and trimmed <= start
            streams.append([e for e in entries if e.key >= oldest])
        merged = list(heapq.merge(*streams, key=lambda e: e.key))
        return (merged if limit is None else merged[:limit]), complete

    def snapshot_after(self, keys: list[str], after: str, max_entries: int,
                       max_bytes: int) -> tuple[list[Entry] | None, bool]:
        """Every entry of `keys` after id `after`, merged, read at one instant (one
        script): any entry not in it was appended later, with a greater id than all of
        it. And whether nothing after `after` is missing. None instead of the entries
        when there are more than `max_entries`, or `max_bytes` of them: Redis stops
        reading there. (Recovery: the live events that arrive meanwhile are kept only if
        newer than the snapshot.)"""
        if self._redis is None:
            entries, complete = self.after(keys, after)
            size = sum(len(Entry.fields(e.event, e.data, e.skip_sid)) for e in entries)
            return (None, False) if len(entries) > max_entries or size > max_bytes else (
                entries, complete)
        start = parse_id(after)
        streams = self.snapshot_streams(keys, after, max_entries, max_bytes)
        if streams is None:
            return None, False
        complete = start >= self._oldest_kept() and all(
            deleted <= start for _, deleted in streams.values())
        return list(heapq.merge(*(entries for entries, _ in streams.values()),
                                key=lambda e: e.key)), complete

    def snapshot_streams(self, keys: list[str], after: str, max_entries: int, max_bytes: int
                         ) -> dict[str, tuple[list[Entry], tuple[int, int]]] | None:
        """`snapshot_after` (Redis only), key by key: each key's entries and the newest
        id trimmed from it (a gap if above `after`); None over the budget."""
        if self._snapshot is None:
            self._snapshot = self._redis().register_script(_SNAPSHOT_SCRIPT)
        reply = self._raw(lambda r: self._snapshot(keys=keys, args=[after, max_entries, max_bytes],
                                                   client=r))
        if not reply:
            return None
        oldest = self._oldest_kept()
        streams = {}
        for key, deleted, rows in zip(keys, reply[::2], reply[1::2], strict=True):
            entries = [Entry.decode(row[0], dict(zip(row[1][::2], row[1][1::2], strict=True)))
                       for row in rows]
            streams[key] = ([e for e in entries if e.key >= oldest], parse_id(_text(deleted)))
        return streams

    def recent(self, key: str, limit: int, events: str | None = None) -> list[Entry]:
        """The last `limit` entries (of event `events`), oldest first."""
        if limit <= 0:
            return []
        oldest = self._oldest_kept()
        if self._redis is None:
            entries = [e for e in self._streams.get(key, ()) if events in (None, e.event)]
            return [e for e in entries[-limit:] if e.key >= oldest]
        found: list[Entry] = []
        end = "+"
        while len(found) < limit:  # pages back past entries of other events
            rows = self._decode(self._raw(lambda r, end=end: r.xrevrange(key, max=end, count=limit)))
            found += [e for e in rows if events in (None, e.event)]
            if len(rows) < limit:
                break
            end = "(" + rows[-1].id
        return [e for e in reversed(found[:limit]) if e.key >= oldest]

    def _read_after(self, key: str, after: str, limit: int | None, events: str | None):
        if self._redis is None:
            start = parse_id(after)
            entries = [e for e in self._streams.get(key, ())
                       if e.key > start and events in (None, e.event)]
            return entries[:limit], self._trimmed.get(key, (0, 0))
        found: list[Entry] = []
        deleted = (0, 0)
        start = after
        while True:
            rows, info = self._raw(lambda r, start=start: self._page(r, key, start, limit))
            deleted = max(deleted, _deleted(info))
            found += [e for e in rows if events in (None, e.event)]
            if limit is None or len(found) >= limit or len(rows) < limit:
                return found[:limit], deleted
            start = rows[-1].id

    def _page(self, r, key: str, start: str, limit: int | None):
        pipe = r.pipeline(transaction=False)
        pipe.xrange(key, min=f"({start}", count=limit)
        pipe.xinfo_stream(key)  # an error when the stream does not exist
        rows, info = pipe.execute(raise_on_error=False)
        if isinstance(rows, Exception):
            raise QueueUnavailable(f"the event log could not be read: {rows}")
        return self._decode(rows), info

    def _raw(self, command):
        try:
            return command(self._redis())
        except RedisError as exc:
            raise QueueUnavailable(f"the event log could not be read: {exc}") from exc

    @staticmethod
    def _decode(rows) -> list[Entry]:
        return [Entry.decode(stream_id, fields) for stream_id, fields in rows or ()]


class PartitionedLog:
    """The event log of a partitioned queue, for readers of any room (history,
    recovery): each room's stream is in its partition's log."""

    def __init__(self, logs: list[EventLog], partition_of: Callable[[str, Any], int]) -> None:
        self.logs = logs
        self._partition_of = partition_of
        self.logged = logs[0].logged  # (shared by every partition's log)

    @property
    def enabled(self) -> bool:
        return self.logs[0].enabled

    def of(self, namespace: str, room: Any) -> EventLog:
        return self.logs[self._partition_of(namespace, room)]

    def by_key(self, key: str) -> EventLog:
        for log in self.logs:
            if key.startswith(log.prefix + ":log:"):
                return log
        raise KeyError(key)

    def key(self, namespace: str, room: str | None) -> str:
        return self.of(namespace, room).key(namespace, room)

    def key_for(self, namespace: str, room: Any) -> str | None:
        return self.of(namespace, room).key_for(namespace, room)

    def recent(self, key: str, limit: int, events: str | None = None) -> list[Entry]:
        return self.by_key(key).recent(key, limit, events)

    def after(self, keys: list[str], after: str, limit: int | None = None,
              events: str | None = None) -> tuple[list[Entry], bool]:
        """(`keys` of one partition: ids are a partition's own)"""
        if not keys:
            return [], True
        return self.by_key(keys[0]).after(keys, after, limit, events)


class History:
    """A chat room's messages, read from the event log of its room."""

    def __init__(self, log: EventLog, namespace: str, room_key: Callable[[str], str]) -> None:
        self.log = log
        self._namespace = namespace
        self._room_key = room_key

    @property
    def enabled(self) -> bool:
        return self.log.enabled

    def _key(self, room: str) -> str:
        return self.log.key(self._namespace, self._room_key(room))

    def recent(self, room: str, limit: int) -> list[dict]:
        """The last `limit` messages of the room, oldest first."""
        return [e.message() for e in self.log.recent(self._key(room), limit, CHAT_MESSAGE)]

    def after(self, room: str, after: str, limit: int) -> tuple[list[dict], bool]:
        """Up to `limit` messages after id `after`, oldest first, and whether nothing
        after it is missing (False: trimmed or expired: resync from `recent`)."""
        entries, complete = self.log.after([self._key(room)], after, limit, CHAT_MESSAGE)
        return [e.message() for e in entries], complete
