"""Socket.IO connection-state recovery, for the official client unchanged, across
workers, instances and restarts (the protocol: socket.io's `connectionStateRecovery`).

- Every socket of a namespace that logs its rooms gets a private session id, `pid`,
  in its CONNECT packet; every logged event (app/core/history.py) is sent to it with
  one more, last argument: the event's log id, its offset. The official client keeps
  both and sends `{pid, offset}` with its auth when it reconnects.
- The socket's record (sid, user, rooms) lives in Redis, not in the worker: in its
  worker's hash while it is connected (refreshed by the heartbeat, so a SIGKILLed
  worker's records outlive it by the window), under its own key for
  RECOVERY_WINDOW_SECONDS once it has disconnected. A reconnect claims it (once).
- A claimed record is restored when the client authenticates as the same user, and
  the log still holds everything after its offset in each of its rooms: same sid,
  same rooms, the missed events sent after CONNECT in log order, then what arrived
  meanwhile, each once (`socket.recovered === true`). Otherwise the socket starts
  fresh (`recovered` false, a new pid) and the client resyncs (`join` with `since`).

A client that cannot take the trailing offset argument (python-socketio's client
passes it to one-argument handlers) sends `"recovery": false` in its auth.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from app.core.history import Entry, EventLog, format_id
from app.core.lifecycle import wait_until
from app.core.queue.partitions import decode_offset, encode_offset

log = logging.getLogger(__name__)

# python-engineio's reasons for a connection that ended without either side meaning
# it (a server's kick and a client's disconnect() are final).
RECOVERABLE_REASONS = {"transport close", "transport error", "ping timeout"}
# Longest wait for the old connection of a recovering client to finish its disconnect
# on this worker (it may be in the middle of it, waiting on Redis, when the client is
# already back): its sid is given back only once it is free.
TWIN_GONE_TIMEOUT = 2.0

# Take a socket's record once: parked under its own key, or (its worker died) in the
# worker's hash. KEYS: own key, worker hash; ARGV: pid. Returns {record, source}.
_CLAIM_SCRIPT = """
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('DEL', KEYS[1])
  return {v, 'parked'}
end
v = redis.call('HGET', KEYS[2], ARGV[1])
if v then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return {v, 'live'}
end
return false
"""

# A socket is gone: park its record under its own key for the window, unless a
# reconnect claimed it meanwhile (then the hash no longer holds what this worker
# wrote: nothing, or the record a reconnect on another worker saved since, which
# stays). KEYS: worker hash, own key; ARGV: pid, the value written, [record, ms].
_PARK_SCRIPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if ARGV[3] then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) end
end
return true
"""


class Sessions:
    """The records of sockets that may come back, in Redis (or this process's memory)."""

    def __init__(self, redis: Callable[[], Any] | None, prefix: str, host: str,
                 window: float) -> None:
        self._redis = redis
        self._prefix = prefix
        self.host = host
        self.window = window
        self._live: dict[str, str] = {}  # memory: pid -> record
        # Live records go to the hash of the worker that issued their pid (its prefix,
        # so a reconnect finds them), which may be another, dead one after a recovery:
        # this worker keeps alive every hash it holds records in (pid host -> pids).
        self._holding: dict[str, set[str]] = {}
        self._parked: dict[str, tuple[str, float]] = {}  # memory: pid -> (record, until)
        self._claim = None
        self._park = None
        # Saves are written behind the connect, a batch per round trip (`flush`): pid ->
        # record not written yet; and the pids written once at least (in the hash).
        self._unsaved: dict[str, str] = {}
        self._written: dict[str, str] = {}  # pid -> the value written
        self._writing: set[str] = set()  # the batch being written
        # Records of sockets gone, parked by the next `flush` before its saves (a
        # reconnect that claims one meanwhile takes it from the hash; its new save then
        # comes after the park, or, on another worker, differs from what this worker
        # wrote: either way the park moves nothing): [(pid, the value written, record
        # or None, until)]; and the first saves of sockets gone before they were written.
        self._unparked: list[tuple[str, str, str | None, float]] = []
        self._unwritten_parks: dict[str, tuple[str, float]] = {}
        self._written_event = None  # set whenever a batch is done
        # set by the server: () -> an event, and (loop) -> None starting a background
        # task (the writer starts with the first save: in the worker, serving). None:
        # every save is written at once.
        self.create_event: Callable[[], Any] | None = None
        self.spawn: Callable[[Callable[[], None]], None] | None = None
        self._wakeup = None

    def new_pid(self) -> str:
        return f"{self.host}.{secrets.token_urlsafe(12)}"

    def _own(self, pid: str) -> str:
        return f"{self._prefix}:recovery:{pid}"

    def _hash(self, host: str) -> str:
        return f"{self._prefix}:recovery:w:{host}"

    def save(self, pid: str, record: dict) -> None:
        """The socket's current rooms (connected): written by the next `flush` (a
        reconnect within that instant starts a fresh socket, as one whose worker's
        Redis could not be written)."""
        value = json.dumps(record)
        if self._redis is None:
            self._live[pid] = value
            return
        host = pid.partition(".")[0]
        self._holding.setdefault(host, set()).add(pid)
        self._unsaved[pid] = value
        self._write_soon()

    def _write_soon(self) -> None:
        if self.spawn is None:
            self.flush()
            return
        if self._wakeup is None:
            self._wakeup = self.create_event()
            self._written_event = self.create_event()
            self.spawn(self._write_behind)
        self._wakeup.set()

    def flush(self) -> None:
        """Write the parks and saves made since the last flush, in one round trip, the
        parks first (RedisError: they are kept for the next one)."""
        if not (self._unsaved or self._unparked or self._unwritten_parks):
            return
        batch, self._unsaved = self._unsaved, {}
        parks, self._unparked = self._unparked, []
        unwritten, self._unwritten_parks = self._unwritten_parks, {}
        self._writing = set(batch)
        if self._written_event is not None:
            self._written_event.clear()
        pipe = self._redis().pipeline(transaction=False)
        now = time.monotonic()
        if parks:
            if self._park is None:
                self._park = self._redis().register_script(_PARK_SCRIPT)
            for pid, written, record, until in parks:
                left = int((until - now) * 1000)
                args = [pid, written] + ([record, left] if record is not None and left > 0
                                         else [])
                self._park(keys=[self._hash(pid.partition(".")[0]), self._own(pid)], args=args,
                           client=pipe)
        for pid, (record, until) in unwritten.items():  # never in the hash: parked as is
            if (left := int((until - now) * 1000)) > 0:
                pipe.set(self._own(pid), record, px=left)
        hosts = set()
        for pid, value in batch.items():
            host = pid.partition(".")[0]
            hosts.add(host)
            pipe.hset(self._hash(host), pid, value)
        for host in hosts:
            pipe.pexpire(self._hash(host), int(self.window * 1000))
        try:
            pipe.execute()
        except RedisError:
            # (newer saves win; parks keep their order, before later ones)
            self._unsaved = {**batch, **self._unsaved}
            self._unparked = parks + self._unparked
            self._unwritten_parks = {**unwritten, **self._unwritten_parks}
            raise
        else:
            self._written.update(batch)
        finally:
            self._writing = set()
            if self._written_event is not None:
                self._written_event.set()

    def written(self) -> bool:
        """Nothing waits to be written (a draining worker waits for this before it exits)."""
        return not (self._unsaved or self._unparked or self._unwritten_parks or self._writing)

    def _write_behind(self, sleep: Callable[[float], None]) -> None:
        """Background task: `flush` whenever there is something to write."""
        while True:
            self._wakeup.wait()
            self._wakeup.clear()
            try:
                self.flush()
            except RedisError:
                sleep(0.5)  # (logged by the queue's outage; again after a pause)
                self._wakeup.set()

    def park(self, pid: str, record: dict | None) -> None:
        """The socket is gone: keep (record) or forget (None) it for the window; written
        by the next `flush`, before its saves, and only if the hash still holds what
        this worker wrote (a reconnect may have claimed it, and saved anew, meanwhile)."""
        if self._redis is None:
            if self._live.pop(pid, None) is not None and record is not None:
                self._parked[pid] = (json.dumps(record), time.monotonic() + self.window)
            return
        host = pid.partition(".")[0]
        held = self._holding.get(host)
        if held is not None:
            held.discard(pid)
            if not held:
                del self._holding[host]
        until = time.monotonic() + self.window
        value = json.dumps(record) if record else None
        if pid in self._writing and self._written_event is not None:
            self._written_event.wait(10.0)  # its save is on its way: parked after it
        self._unsaved.pop(pid, None)  # (the record parked is the latest)
        written = self._written.pop(pid, None)
        if written is not None:  # in the hash
            self._unparked.append((pid, written, value, until))
        elif value is not None:  # never in the hash, so never claimed from it
            self._unwritten_parks[pid] = (value, until)
        else:
            return
        self._write_soon()

    def claim(self, pid: str) -> tuple[dict, str] | None:
        """The record of `pid` and where it was ("parked", "live"), taken once."""
        host = pid.partition(".")[0]
        if self._redis is None:
            now = time.monotonic()
            self._parked = {p: v for p, v in self._parked.items() if v[1] > now}
            if pid in self._parked:
                return json.loads(self._parked.pop(pid)[0]), "parked"
            if pid in self._live:
                return json.loads(self._live.pop(pid)), "live"
            return None
        if self._claim is None:
            self._claim = self._redis().register_script(_CLAIM_SCRIPT)
        found = self._claim(keys=[self._own(pid), self._hash(host)], args=[pid])
        if not found:
            return None
        value, source = (v.decode() if isinstance(v, bytes) else v for v in found)
        return json.loads(value), source

    def refresh(self) -> None:
        """Heartbeat: this worker's live records outlive it by the window."""
        if self._redis is not None:
            pipe = self._redis().pipeline(transaction=False)
            for host in list(self._holding):
                pipe.pexpire(self._hash(host), int(self.window * 1000))
            pipe.execute()


class Connecting:
    """One socket's connect, from the CONNECT packet to the replay."""

    __slots__ = ("buffer", "namespace", "offset", "partitions", "pid", "record", "restored",
                 "rooms", "sid", "user")

    def __init__(self, namespace: str, pid: str | None) -> None:
        self.namespace = namespace
        self.pid = pid  # None: no recovery for this socket
        self.record: dict | None = None  # the claimed record, while it may be restored
        self.offset: list[tuple[int, int]] | None = None  # its position in each partition
        self.partitions: set[int] = set()  # those it has rooms in
        self.sid: str | None = None
        self.restored: list = []  # the missed entries, to send after CONNECT
        self.buffer: list | None = None
        self.user: str | None = None  # who authenticated (records are restored to them only)
        self.rooms: set[str] = set()  # entered while connecting (the record's first rooms)


class Recovery:
    """The server side of recovery: records, restore, replay (used by
    app/sockets/server.py and BaseNamespace._connect)."""

    def __init__(self, server, log: EventLog, sessions: Sessions, max_entries: int = 1000,
                 max_bytes: int = 1_000_000) -> None:
        self.server = server
        self.log = log
        self.sessions = sessions
        self.max_entries = max_entries  # a replay's budget (RECOVERY_MAX_ENTRIES, _BYTES)
        self.max_bytes = max_bytes
        self.pids: dict[str, str] = {}  # sid -> pid of this worker's recovering sockets
        self.records: dict[str, dict] = {}  # sid -> record
        self._local = threading.local()  # the connect being handled (green-thread local)

    def offers(self, namespace: str) -> bool:
        return self.sessions.window > 0 and self.log.key_for(namespace, None) is not None

    @property
    def current(self) -> Connecting | None:
        return getattr(self._local, "state", None)

    # --- connect ------------------------------------------------------------
    def begin(self, namespace: str, auth: Any) -> Connecting | None:
        """Before python-socketio handles a CONNECT: claim the record the client names."""
        if not self.offers(namespace) or (isinstance(auth, dict) and auth.get("recovery") is False):
            return None
        state = Connecting(namespace, self.sessions.new_pid())
        pid = auth.get("pid") if isinstance(auth, dict) else None
        if isinstance(pid, str) and 0 < len(pid) <= 128:
            try:
                claimed = self.sessions.claim(pid)
            except RedisError:
                claimed = None
            if claimed is None:
                log.info("recovery: no session %s (expired, used, or Redis lost it)",
                         pid.partition(".")[0])
            else:
                record, source = claimed
                if source == "live":  # its worker died, or its old connection is not
                    self._end_twin(record["sid"], namespace)  # closed yet: end that
                if record.get("ns") == namespace and self._gone_here(record["sid"], namespace):
                    state.record, state.pid = record, pid
                    state.offset = _valid_offset(auth.get("offset"), record,
                                                 len(self.log.logs))
        self._local.state = state
        return state

    def _end_twin(self, sid: str, namespace: str) -> None:
        # (its client has the pid, so it is this client's: the new connection wins)
        manager = self.server.manager
        eio_sid = manager.eio_sid_from_sid(sid, namespace)
        if eio_sid is not None:  # here: at once (its record was claimed: not parked)
            self.server.end_session(eio_sid)
        elif hasattr(manager, "membership"):  # on another worker: through the queue
            with contextlib.suppress(Exception):
                manager.disconnect(sid, namespace)

    def _connected_here(self, sid: str, namespace: str) -> bool:
        return self.server.manager.eio_sid_from_sid(sid, namespace) is not None

    def _gone_here(self, sid: str, namespace: str) -> bool:
        """The sid is free on this worker, once a disconnect in progress has finished."""
        return wait_until(lambda: not self._connected_here(sid, namespace), TWIN_GONE_TIMEOUT,
                          self.server.sleep)

    def restore(self, sid: str, namespace: str, user_id: str) -> list[str] | None:
        """In the connect handler, once authenticated: the socket's rooms back and what
        it missed read, or None (a fresh socket). Events arriving meanwhile wait."""
        state = self.current
        if state is None or state.namespace != namespace:
            return None
        state.user = user_id
        if state.record is None:
            return None
        record, state.record = state.record, None
        if record.get("user") != user_id or state.offset is None or record["sid"] != sid:
            log.info("recovery of %s refused: %s", record.get("sid"),
                     "another user" if record.get("user") != user_id else
                     "invalid offset" if state.offset is None else "its sid is taken")
            state.pid = self.sessions.new_pid()
            return None
        manager = self.server.manager
        state.buffer = manager.replaying[sid] = []
        rooms = [r for r in record.get("rooms", ()) if isinstance(r, str)]
        # each partition's streams of its rooms (app/core/queue/partitions.py)
        keys: dict[int, list[str]] = {}
        for room in (None, *rooms):
            room_log = self.log.of(namespace, room)
            # (the announcements' always: offers() saw the namespace logged)
            if (key := room_log.key_for(namespace, room)) is not None:
                keys.setdefault(room_log.partition, []).append(key)
        try:
            entered = []
            for room in rooms:  # (a routed room subscribed first: QueueUnavailable)
                manager.basic_enter_room(sid, namespace, room)
                entered.append(room)
            entries, complete = self._snapshot(keys, state.offset)
        except Exception:  # the log unreadable: start fresh rather than miss events
            log.info("recovery of %s: the event log could not be read", sid, exc_info=True)
            entries, complete = [], False
        if entries is None:
            log.info("recovery of %s: more than RECOVERY_MAX_ENTRIES or _BYTES missed since %s: "
                     "a fresh socket (it re-joins with since)", sid, encode_offset(state.offset))
        elif not complete:
            log.info("recovery of %s: the log no longer holds all after %s", sid,
                     encode_offset(state.offset))
        if not complete:
            for room in entered:
                manager.basic_leave_room(sid, namespace, room)
            manager.replaying.pop(sid, None)
            state.buffer = None
            state.pid = self.sessions.new_pid()
            return None
        state.rooms.update(rooms)
        state.restored = [(p, e) for p, e in entries if not _skips(e.skip_sid, sid)]
        state.partitions = set(keys)
        state.sid = sid
        return rooms

    def _snapshot(self, keys: dict[int, list[str]], offset: list[tuple[int, int]]):
        """What the socket missed in each partition, after its position there, within
        one budget: [(partition, entry)] (each partition's in its order, the partitions
        interleaved by time), or None over the budget; and whether nothing is missing."""
        streams, complete = [], True
        entries_left, bytes_left = self.max_entries, self.max_bytes
        for n, (partition, partition_keys) in enumerate(keys.items(), 1):
            entries, whole = self.log.logs[partition].snapshot_after(
                partition_keys, format_id(offset[partition]), entries_left, bytes_left)
            if entries is None:
                return None, False
            complete = complete and whole
            streams.append([(partition, entry) for entry in entries])
            if n < len(keys):  # (what the next partitions' reads may still take)
                entries_left -= len(entries)
                bytes_left -= sum(len(Entry.fields(e.event, e.data, e.skip_sid)) for e in entries)
        return list(heapq.merge(*streams, key=lambda item: item[1].key)), complete

    def end(self, state: Connecting, eio_sid: str) -> None:
        """After python-socketio handled the CONNECT: the replay (sent after the CONNECT
        packet), then the socket's record saved."""
        self._local.state = None
        manager = self.server.manager
        sid = manager.sid_from_eio_sid(eio_sid, state.namespace)
        if sid is None or not manager.is_connected(sid, state.namespace):
            if state.sid is not None:
                manager.replaying.pop(state.sid, None)
            return
        if state.buffer is not None:
            # the socket's position in each partition, moved by what it is sent
            positions = list(state.offset)
            for partition, entry in state.restored:
                positions[partition] = entry.key
                manager.send_logged(eio_sid, state.namespace, entry.event, entry.data, entry.id,
                                    encode_offset(positions))
            # what came live meanwhile, unless the log read had it already
            while state.buffer:
                partition, key, event, data, offset = state.buffer.pop(0)
                if key > positions[partition]:
                    positions[partition] = key
                    manager.send_logged(eio_sid, state.namespace, event, data, offset,
                                        encode_offset(positions))
            # events delivered here later that the snapshot had: dropped by id (the
            # floors of the partitions it has rooms in)
            floors = {p: positions[p] for p in state.partitions}
            if floors:
                manager.replaying[sid] = floors
            else:
                manager.replaying.pop(sid, None)
            manager.replayed_up_to(sid, state.namespace, state.rooms, floors)
        self.pids[sid] = state.pid
        manager.offset_sids.add(sid)
        self.records[sid] = {"sid": sid, "ns": state.namespace, "user": state.user,
                             "rooms": sorted(state.rooms), "at": int(time.time() * 1000)}
        self._save(sid)

    # --- while connected ------------------------------------------------------
    def room_changed(self, sid: str, room: Any, entered: bool) -> None:
        """The socket entered or left `room` (kept per socket: python-socketio can only
        list a socket's rooms by scanning every room of the namespace)."""
        if not isinstance(room, str) or room == sid:
            return
        record = self.records.get(sid)
        if record is None:  # still connecting (its connect handler joins rooms)
            state = self.current
            if state is not None:
                (state.rooms.add if entered else state.rooms.discard)(room)
            return
        rooms = set(record["rooms"])
        (rooms.add if entered else rooms.discard)(room)
        record["rooms"] = sorted(rooms)
        self._save(sid)

    def _save(self, sid: str) -> None:
        # (Redis down: not recoverable until the next change; the outage is logged)
        with contextlib.suppress(RedisError):
            self.sessions.save(self.pids[sid], self.records[sid])

    def disconnected(self, sid: str, reason: Any) -> None:
        pid = self.pids.pop(sid, None)
        record = self.records.pop(sid, None)
        self.server.manager.offset_sids.discard(sid)
        self.server.manager.replaying.pop(sid, None)
        if pid is None:
            return
        keep = record if reason in RECOVERABLE_REASONS and record.get("user") else None
        with contextlib.suppress(RedisError):  # else its worker's hash still has it
            self.sessions.park(pid, keep)


def _valid_offset(offset: Any, record: dict, partitions: int) -> list[tuple[int, int]] | None:
    """The client's offset, its position in each partition; without one (it got no
    event yet), its connect time."""
    if offset is None:
        return [(max(int(record.get("at", 0)) - 1000, 0), 0)] * partitions
    if not isinstance(offset, str) or len(offset) > 41 * partitions:
        return None
    try:
        return decode_offset(offset, partitions)
    except ValueError:
        return None


def _skips(skip_sid: Any, sid: str) -> bool:
    return skip_sid == sid or (isinstance(skip_sid, list) and sid in skip_sid)
