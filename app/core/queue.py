"""The message queue: python-socketio client managers chosen by MESSAGE_QUEUE_URL.

- empty URL: `LocalManager`, in memory, one process;
- redis://, rediss://, unix://, redis+sentinel://: `RedisQueueManager`, which every
  worker (and any external emitter) shares through one Redis pub/sub channel.

The guarantee (docs/architecture.md, "The message queue"): **an emit whose publish
returns has been handed by Redis to the subscription of every live worker, in the
order this worker published it; otherwise the caller gets QueueUnavailable.**

How it holds, for outages of any length and any number of concurrent publishes:

- One ordered publisher per worker (`_publisher_loop`): every publish of the worker
  goes through one queue and one pipeline, so Redis sees them in the order they were
  made (pooled connections raced before: one sender's messages reached other workers
  out of order). Each message carries (host_id, seq); a retry after a broken
  connection may publish a message twice, and receivers drop what they already had.
- Known workers (`Membership`): every worker registers in a Redis sorted set every
  HEARTBEAT seconds, and keeps in memory the workers it has seen there. PUBLISH says
  how many subscriptions got a message; fewer than the live workers known means some
  worker's clients missed it, and the caller is told. The memory outlives a Redis
  restart (the set is empty then): a known worker stays expected until it has been
  missing from the set after the queue has worked for MEMBER_TTL seconds, so an
  outage never makes a worker look gone. A worker leaving on purpose says so (`leave`).
- No worker is unknown (`Membership.complete`, `wait_announced`): a worker serves only
  once every other live worker has read a set that holds it (a new worker's clients
  were otherwise missed by publishes judged without it, acked ok, when an outage came
  before the others' next heartbeat). The set carries its birth (Redis's run id and
  a time; a restarted Redis has a new run id, whatever an AOF brings back): a view
  that finds it reborn, or that starts with no memory (a new worker, an external
  emitter), refuses until the set has existed for REFILL seconds, in which every live
  worker registers again. Every publish pipeline reads the birth too.
- Outages are logged once when they start and once when they end, with counts.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import redis
import redis.sentinel
import socketio
from engineio import packet as eio_packet
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError
from socketio import packet as sio_packet
from socketio.redis_manager import parse_redis_sentinel_url

from app.adapters.redis_hooks import NotingRetry, nothing_sent, start_noting
from app.adapters.redis_hooks import maybe_sent as redis_maybe_sent
from app.adapters.socketio_hooks import RedisManagerHooks
from app.core import metrics
from app.core.control import LocalControlBus, RedisControlBus, control_key
from app.core.errors import DeliveryIncomplete, QueueUnavailable
from app.core.history import Entry, EventLog, parse_id
from app.core.idempotency import SeenMessages
from app.core.lifecycle import supervised
from app.core.outage import Outage
from config.settings import Settings

log = logging.getLogger(__name__)

# Seconds between two registrations of a worker in the set of live workers.
HEARTBEAT = 0.5
# A worker missing from that set this long (of time with a working queue) is gone.
MEMBER_TTL = 2.0
# After an outage, every worker must resubscribe and register again before absence
# means anything: a worker whose Redis connections were still backing off would
# otherwise be dropped, and the messages it misses acked ok.
RESTORE_GRACE = 5.0
# Longest pause between two resubscribe attempts (python-socketio's grows to 60 s).
MAX_RESUBSCRIBE_DELAY = 1.0
# A set (re)born this long ago holds every live worker: each registers within a
# heartbeat of Redis coming back (one more for a late one), or as soon as its
# subscription is back if it never registered.
REFILL = 2 * HEARTBEAT
# Longest wait at boot for every other live worker to have read this one in the set
# (a dead worker blocks it until its entry expires: MEMBER_TTL).
ANNOUNCE_TIMEOUT = MEMBER_TTL + 2 * HEARTBEAT
# Seconds a leaving worker stays subscribed after saying so, while the others hear it.
LEAVE_GRACE = 0.5
# Messages published in one pipeline at most (one round trip for a busy worker).
MAX_BATCH = 256
LEAVE = "worker_leave"

# This run of Redis (INFO refused to the queue's user: "", restarts are told by the
# birth key alone), and the set's birth: false unless it belongs to this run, then the
# key as stored (an earlier run's, or false).
_RUN_AND_BIRTH = """
local info = redis.pcall('INFO', 'server')
local run = type(info) == 'string' and string.match(info, 'run_id:(%x+)') or ''
local function birth(key)
  local stored = redis.call('GET', key)
  if stored and string.sub(stored, 1, #run) == run then return stored, stored end
  return false, stored
end
"""

# Register this worker (when given) and return the live ones, on Redis's clock so that
# instances with skewed clocks agree: {now ms, the set's birth, added, member, score,
# ...}. A member's score is its last registration, which is also when it last read the
# set. The birth is "<Redis run id>:<ms>", renewed when the set starts anew or Redis
# was restarted (the run id changes; the key itself may come back from the AOF, or be
# on a promoted replica). KEYS: the set, its birth; ARGV: ttl ms, [host_id].
_MEMBERS_SCRIPT = _RUN_AND_BIRTH + """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl = tonumber(ARGV[1])
local born, stored = birth(KEYS[2])
if stored and not born then
  redis.call('DEL', KEYS[1], KEYS[2])  -- the last run's: everyone registers again
end
local added = 0
if ARGV[2] then
  added = redis.call('ZADD', KEYS[1], ms, ARGV[2])
  if not born then
    born = run .. ':' .. ms
    redis.call('SET', KEYS[2], born)
  end
  redis.call('PEXPIRE', KEYS[1], ttl * 4)
  redis.call('PEXPIRE', KEYS[2], ttl * 4)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - ttl)
return {ms, born or '', added, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}
"""


# The set's birth as a publish sees it: "" if it belongs to an earlier run of Redis
# (restarted, and nobody has registered since). KEYS: the birth.
_BORN_SCRIPT = _RUN_AND_BIRTH + """
return birth(KEYS[1]) or ''
"""


_BORN_SHA = hashlib.sha1(_BORN_SCRIPT.encode()).hexdigest()
NOSCRIPT = object()  # a script Redis did not have: it did not run


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


class SetView:
    """One read of the set of live workers (`_MEMBERS_SCRIPT`)."""

    __slots__ = ("added", "born", "now", "scores")

    def __init__(self, reply: list) -> None:
        self.now, self.born, self.added = int(reply[0]), _text(reply[1]), bool(reply[2])
        flat = [_text(v) for v in reply[3]]
        self.scores = {flat[i]: float(flat[i + 1]) for i in range(0, len(flat), 2)}

    @property
    def born_ms(self) -> int | None:
        """When the set started (Redis ms); None: nobody registered since it started anew."""
        ms = self.born.rpartition(":")[2]
        return int(ms) if ms.isdigit() else None

    def refilled(self) -> bool:
        """Has the set existed long enough to hold every live worker?"""
        return self.born_ms is not None and self.now - self.born_ms >= REFILL * 1000


# Log an event and publish it, in one step (app/core/history.py): the entry gets the
# next global id, the published message carries it as its offset. A retried client_id
# (its once key is set) is published again with its first id, marked `again`
# (LoggedDelivery.deliver_logged); a retried batch (seq not above the publisher's
# last) without one, and receivers drop it by seq.
# KEYS: stream, log hash (last id, last seq per publisher), [once key].
# ARGV: channel, message head, tail, entry, maxlen, ttl ms, publisher, seq, once ttl ms.
APPEND_SCRIPT = """
local done = tonumber(redis.call('HGET', KEYS[2], ARGV[7]) or '0')
local once = KEYS[3] and redis.call('GET', KEYS[3])
if once then  -- with its first id: receivers deliver it only where it is missing
  return {once, redis.call('PUBLISH', ARGV[1], ARGV[2] .. once .. '","again":true}')}
end
if tonumber(ARGV[8]) <= done then
  local plain = string.sub(ARGV[2], 1, #ARGV[2] - 11) .. '}'
  return {'', redis.call('PUBLISH', ARGV[1], plain)}
end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = 0
local last = redis.call('HGET', KEYS[2], 'last')
if last then
  local lms, ln = string.match(last, '^(%d+)-(%d+)$')
  if ms <= tonumber(lms) then ms = tonumber(lms); n = tonumber(ln) + 1 end
end
local id = string.format('%.0f-%d', ms, n)
if not pcall(redis.call, 'XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], id, 'm', ARGV[4]) then
  -- the counter was lost (evicted) but not the stream: go on from the stream's top
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1][1]
  local tms, tn = string.match(top, '^(%d+)-(%d+)$')
  id = string.format('%.0f-%d', tonumber(tms), tonumber(tn) + 1)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], id, 'm', ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('HSET', KEYS[2], 'last', id, ARGV[7], ARGV[8])
if KEYS[3] then redis.call('SET', KEYS[3], id, 'PX', ARGV[9]) end
return {id, redis.call('PUBLISH', ARGV[1], ARGV[2] .. id .. ARGV[3])}
"""
OFFSET_FIELD = ',"offset":"'  # 11 characters: APPEND_SCRIPT strips them
_APPEND_SHA = hashlib.sha1(APPEND_SCRIPT.encode()).hexdigest()


class LogWrite:
    """What a logged emit adds to its publish."""

    __slots__ = ("entry", "key", "on_id", "once")

    def __init__(self, key: str, entry: str, on_id, once: str | None) -> None:
        self.key = key
        self.entry = entry
        self.on_id = on_id
        self.once = once


_once = threading.local()


@contextlib.contextmanager
def logged_once(key: str | None):
    """The logged emit made inside is logged once per `key` (within the idempotency
    window), however often it is retried: a client_id's retry (app/core/chat.py)."""
    _once.key = key
    try:
        yield
    finally:
        _once.key = None


def _message_with_id(args: list):
    """The sender's copy of a payload that asks for its log id (`stream_id: None`)."""
    first = args[0] if args else None
    if isinstance(first, dict) and "stream_id" in first and first["stream_id"] is None:
        return first
    return None


class LoggedDelivery:
    """Delivery of logged events to this worker's sockets (both managers).

    A socket with recovery (`offset_sids`) gets each logged event with its offset as
    the last argument; one being restored (`replaying`) has them held until its
    replay is sent (app/core/recovery.py). The packets are encoded once per emit,
    each variant shared by its recipients.
    """

    log: EventLog | None = None
    recovery = None  # app.core.recovery.Recovery, set by the server
    repeats = False  # can a logged event come again (a retry through Redis)?

    def _init_delivery(self) -> None:
        self.offset_sids: set[str] = set()
        # sid -> events held while its replay is read (a list), then the id its replay
        # went up to (a floor: a later delivery of those is a repeat)
        self.replaying: dict[str, list | tuple[int, int]] = {}
        self.preset_sid: str | None = None
        # The highest log id delivered here (or the log's top at the first subscribe):
        # the subscription carries new ids in increasing order.
        self.position: tuple[int, int] | None = None
        # (namespace, room) -> sid -> the position when the socket entered the room, or
        # the id its recovery replay went up to: a repeat of an id not above it is not
        # owed to it (it had the message, from this worker, its history or its replay)
        self.entered: dict[tuple[str, Any], dict[str, tuple[int, int]]] = {}

    def logged_key(self, namespace: str, room, callback, kwargs) -> str | None:
        if self.log is None or callback is not None or kwargs.get("ignore_queue"):
            return None
        return self.log.key_for(namespace, room)

    def deliver_logged(self, event: str, data: list, namespace: str, room, skip_sid,
                       offset: str | None, repeat: bool = False) -> None:
        message = _message_with_id(data)
        if message is not None and offset:
            message["stream_id"] = offset
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        packets: dict[bool, list] = {}
        key = parse_id(offset) if offset else None
        repeat = repeat and key is not None
        if key is not None and not repeat and (self.position is None or key > self.position):
            self.position = key
        entered = self.entered.get((namespace, room), {}) if repeat else None
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            if repeat and (since := entered.get(sid)) is not None and since >= key:
                continue
            held = self.replaying.get(sid)
            if held is not None and key is not None:
                if isinstance(held, list):  # its replay is being read: after it
                    held.append((key, event, data, offset))
                    continue
                if key <= held:  # replayed already (the floor of its snapshot)
                    continue
                del self.replaying[sid]  # in id order from here on
            # a repeat goes without its offset: the socket may have later ones already
            marked = key is not None and not repeat and sid in self.offset_sids
            if marked not in packets:
                packets[marked] = self._eio_packets(namespace, [event, *data] + [offset] * marked)
            for pkt in packets[marked]:
                self.server.send_engineio_packet(eio_sid, pkt)

    def send_logged(self, eio_sid: str, namespace: str, event: str, data: list,
                    offset: str) -> None:
        """One logged event to one socket, with its offset (a replay)."""
        message = _message_with_id(data)
        if message is not None:
            data = [{**message, "stream_id": offset}, *data[1:]]
        for pkt in self._eio_packets(namespace, [event, *data, offset]):
            self.server.send_engineio_packet(eio_sid, pkt)

    def _eio_packets(self, namespace: str, data: list) -> list:
        encoded = self.server.packet_class(sio_packet.EVENT, namespace=namespace,
                                           data=data).encode()
        encoded = encoded if isinstance(encoded, list) else [encoded]
        return [eio_packet.Packet(eio_packet.MESSAGE, p) for p in encoded]

    # A restored socket gets its old sid back (python-socketio's pre_connect, with
    # the sid chosen by app/core/recovery.py when there is one).
    def pre_connect(self, eio_sid, namespace):
        sid, self.preset_sid = self.preset_sid, None
        if sid is None:
            return super().pre_connect(eio_sid, namespace)
        try:
            self.basic_enter_room(sid, namespace, None, eio_sid=eio_sid)
        except Exception:  # that sid is taken here: a new one
            return super().pre_connect(eio_sid, namespace)
        self.basic_enter_room(sid, namespace, sid, eio_sid=eio_sid)
        self.pending_connect.setdefault(namespace, []).append(sid)
        return sid

    def basic_enter_room(self, sid, namespace, room, eio_sid=None):
        result = super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if self.repeats and self.position is not None and self._logged_room(sid, namespace, room):
            self.entered.setdefault((namespace, room), {})[sid] = self.position
        return result

    def _logged_room(self, sid: str, namespace: str, room) -> bool:
        return room != sid and self.log is not None and self.log.key_for(namespace, room) is not None

    def basic_leave_room(self, sid, namespace, room):
        entered = self.entered.get((namespace, room))
        if entered is not None and entered.pop(sid, None) is not None and not entered:
            del self.entered[(namespace, room)]
        return super().basic_leave_room(sid, namespace, room)

    def replayed_up_to(self, sid: str, namespace: str, rooms, key: tuple[int, int]) -> None:
        """A recovered socket's replay went up to `key` in `rooms`."""
        if not self.repeats:
            return
        for room in rooms:
            if (self._logged_room(sid, namespace, room)
                    and sid in self.rooms.get(namespace, {}).get(room, {})):  # still in it
                entered = self.entered.setdefault((namespace, room), {})
                entered[sid] = max(entered.get(sid, key), key)

    # A recovering socket's record follows its rooms.
    def enter_room(self, sid, namespace, room, eio_sid=None):
        result = super().enter_room(sid, namespace, room, eio_sid=eio_sid)
        if self.recovery is not None:
            self.recovery.room_changed(sid, room, entered=True)
        return result

    def leave_room(self, sid, namespace, room):
        result = super().leave_room(sid, namespace, room)
        if self.recovery is not None:
            self.recovery.room_changed(sid, room, entered=False)
        return result


def first_delivery(seen: SeenMessages | None, data) -> bool:
    """False for a payload with a `client_id` whose id this worker delivered already
    (a retried send, app/core/idempotency.py)."""
    if seen is None or not isinstance(data, dict) or "client_id" not in data:
        return True
    return seen.first_time(str(data.get("id")))


class LocalManager(LoggedDelivery, socketio.Manager):
    """In-memory manager: every client is in this process."""

    def __init__(self, seen: SeenMessages | None = None) -> None:
        super().__init__()
        self.control = LocalControlBus()
        self.seen = seen
        self._init_delivery()

    def emit(self, event, data, namespace=None, room=None, skip_sid=None, callback=None,
             to=None, **kwargs):
        if not first_delivery(self.seen, data):
            return None
        room = to or room
        key = self.logged_key(namespace, room, callback, kwargs)
        if key is None:
            return super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                                callback=callback, **kwargs)
        args = list(data) if isinstance(data, tuple) else [data]
        offset = self.log.append_memory(key, event, args, skip_sid)
        self.deliver_logged(event, args, namespace, room, skip_sid, offset)
        return None

    def check(self) -> str | None:
        """None when the queue is usable, else the reason (always usable here)."""
        return None

    def leave(self) -> None:
        """Nothing to tell: no other worker shares this manager."""

    def wait_announced(self, timeout: float = 0) -> bool:
        """Nobody else to know this worker."""
        return True


class Membership:
    """The workers this one knows to be alive, remembered across Redis outages."""

    def __init__(self, ttl: float = MEMBER_TTL, grace: float = RESTORE_GRACE) -> None:
        self.ttl = ttl
        self.grace = grace
        self.alive: set[str] = set()  # host_ids
        self.left: set[str] = set()
        self.healthy_since = time.monotonic()
        self.restored = False  # healthy_since is the end of an outage
        self.born: str | None = None  # the birth of the set this view has read
        self.complete = False  # it has read that set once it held every live worker

    def read(self, view: SetView, now: float | None = None) -> None:
        """A read of the set: its members, and whether it was reborn meanwhile (a
        restarted Redis: it refills, and this view is incomplete until it has)."""
        if view.born != self.born:
            if self.born is not None:
                self.queue_restored(now)  # absences count from the refill, not before
            self.born = view.born
            self.complete = False
        if view.refilled():
            self.complete = True
        self.update(view.scores, now)

    def update(self, members, now: float | None = None) -> None:
        """The set as Redis has it now: new workers added; missing ones dropped, but
        only from a view that is fresh (a stale one never makes a worker look gone)."""
        now = time.monotonic() if now is None else now
        present = {member.decode() if isinstance(member, bytes) else member
                   for member in members}
        self.alive |= present - self.left
        # Absent from a set that has been kept up for `ttl` (every live worker
        # re-registers several times in that span): gone. Just after an outage the set
        # is still refilling, so absence counts only from when the queue came back.
        if self.fresh(now):
            self.alive &= present

    def forget(self, host: str) -> None:
        self.left.add(host)
        self.alive.discard(host)

    def queue_restored(self, now: float | None = None) -> None:
        """The queue works again: absences are counted from now, not from the outage."""
        self.healthy_since = time.monotonic() if now is None else now
        self.restored = True

    def expected(self) -> int:
        return len(self.alive)

    def fresh(self, now: float | None = None) -> bool:
        """Is the set complete (the queue has worked for `ttl`)?"""
        now = time.monotonic() if now is None else now
        return now - self.healthy_since > (max(self.ttl, self.grace) if self.restored else self.ttl)


# Within an event handler (app/sockets/server.py, `deferred_acks`): publishes are
# queued in order and the handler goes on; the event's ack is sent once they are done
# (or carries their error). A client's next event is then handled while this one's
# publish is on its way, instead of after a round trip to Redis.
_acks = threading.local()  # green-thread local under eventlet and gevent


@contextlib.contextmanager
def deferred_acks():
    """Collect the publishes made inside; yields their list (each has .event, .error)."""
    _acks.pending = pending = []
    try:
        yield pending
    finally:
        _acks.pending = None


@contextlib.contextmanager
def publish_now():
    """Inside, publishes wait for their result again (a caller that must know it at
    once: a claim marked sent, a best-effort notice whose failure is its own)."""
    saved, _acks.pending = getattr(_acks, "pending", None), None
    try:
        yield
    finally:
        _acks.pending = saved


class _Pending:
    __slots__ = ("error", "event", "judged", "log", "payload", "receivers", "seq")

    def __init__(self, payload: str, event, seq: int, log: LogWrite | None = None) -> None:
        self.payload = payload
        self.event = event
        self.seq = seq
        self.log = log
        self.error: QueueUnavailable | None = None
        self.judged = False  # an unexpected error before its judgement is not an "ok"
        self.receivers = 0


class RedisQueueManager(LoggedDelivery, RedisManagerHooks):
    repeats = True
    def __init__(self, settings: Settings, *, write_only: bool = False,
                 logger: logging.Logger | None = None, seen: SeenMessages | None = None) -> None:
        super().__init__(url=settings.message_queue_url, channel=settings.message_queue_channel,
                         write_only=write_only, logger=logger)
        self._settings = settings
        self.seen = seen
        self._init_delivery()
        self.members_key = settings.message_queue_channel + ":workers"
        self.born_key = self.members_key + ":born"
        self.membership = Membership()
        self.announced = None  # an event: every other live worker has read this one
        self._first_registration: float | None = None  # Redis ms
        self._seq = 0
        # host_id -> (last seq received from it, when): repeats and gaps per publisher
        self._last_seq: dict[str, tuple[int, float]] = {}
        self._pending: collections.deque[_Pending] = collections.deque()
        self._wakeup = None
        self._subscribed = False
        self._registered = False
        self._leaving = None  # an event once leave() has started
        self._publishing = Outage("publish")  # publishes and this worker's registration
        self._subscription = Outage("subscription")
        self._members_script = None
        # Are APPEND_SCRIPT and _BORN_SCRIPT in this Redis's script cache? Loaded before
        # the first batch and after every resubscribe (a restarted Redis has none: a
        # batch's EVALSHA would fail with NOSCRIPT and its message be refused).
        self._scripts_loaded = False
        # Called by the heartbeat with the live workers' ids when this worker's view of
        # them is fresh (presence and shared connection counts keep their per-worker
        # entries alive; presence reaps a dead worker's: app/core/presence.py).
        self.heartbeat_hooks: list[Callable[[set[str]], None]] = []
        self.control = RedisControlBus(self.publisher, settings.message_queue_channel + ":control",
                                       timeout=settings.gather_timeout,
                                       key=control_key(settings))

    # --- connections ------------------------------------------------------
    def publisher(self) -> redis.Redis:
        """The shared client for publishes and commands, created on first use."""
        if self.redis is None:
            self.redis = self._client(for_publishing=True)
        return self.redis

    def subscriber(self) -> redis.Redis:
        """A new client for a pub/sub subscription: no read timeout, it idles by design."""
        return self._client(for_publishing=False)

    def _client(self, *, for_publishing: bool) -> redis.Redis:
        s = self._settings
        # One immediate reconnect (a pooled connection the restart broke), never
        # redis-py's default of 10 with backoff: the loops here retry on their own
        # schedule, and a heartbeat or resubscribe asleep in a backoff after Redis is
        # back would make its worker look gone (RESTORE_GRACE).
        options: dict = {"socket_keepalive": True, "health_check_interval": 30,
                         "socket_connect_timeout": s.redis_socket_timeout,
                         "retry": NotingRetry(NoBackoff(), 1)}
        if for_publishing:
            options["socket_timeout"] = s.redis_socket_timeout
        url = s.message_queue_url
        if urlparse(url).scheme == "redis+sentinel":
            sentinels, service, extra = parse_redis_sentinel_url(url)
            sentinel = redis.sentinel.Sentinel(sentinels, **{**options, **extra})
            return sentinel.master_for(service or self.channel, max_connections=s.redis_max_connections)
        if not for_publishing:
            return redis.Redis.from_url(url, **options)
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=s.redis_max_connections, timeout=s.redis_pool_timeout, **options)
        return redis.Redis(connection_pool=pool)

    def connect_redis(self) -> None:
        # Called by the listener on every (re)subscribe: a fresh subscription,
        # while the publisher's pool stays (it reconnects by itself).
        if self.pubsub is not None:
            with contextlib.suppress(RedisError):
                self.pubsub.close()
        self.publisher()
        self.pubsub = self.subscriber().pubsub(ignore_subscribe_messages=True)
        self.connected = True
        self._scripts_loaded = False

    # --- lifecycle --------------------------------------------------------
    def initialize(self) -> None:
        super().initialize()  # starts python-socketio's listener (_thread)
        if self.write_only:
            return
        self._wakeup = self.server.eio.create_event()
        self.announced = self.server.eio.create_event()
        self.server.start_background_task(supervised, self.server.sleep, self._publisher_loop)
        self.server.start_background_task(supervised, self.server.sleep, self._heartbeat_loop)
        self.control.start(self.server.start_background_task, self.subscriber)

    def listeners(self) -> int:
        """How many workers are subscribed to the channel right now."""
        return int(self.publisher().pubsub_numsub(self.channel)[0][1])

    def check(self) -> str | None:
        """None when a publish made now would be judged ok (readiness), else why not."""
        try:
            born = self._born_now()
        except RedisError as exc:
            return f"message queue unreachable: {exc.__class__.__name__}: {exc}"
        if self.write_only:
            return None
        if not self._subscribed:
            return "message queue: this worker is not subscribed yet (resubscribing)"
        if born != self.membership.born or not self.membership.complete:
            return "message queue: the workers are registering again (a new or restarted Redis)"
        return None

    def _born_now(self) -> str:
        client = self.publisher()
        try:
            return _text(client.evalsha(_BORN_SHA, 1, self.born_key))
        except NoScriptError:
            self._load_scripts(client)
            return _text(client.evalsha(_BORN_SHA, 1, self.born_key))

    def leave(self) -> None:
        """Tell the other workers this one is going (a drained worker), so that they stop
        expecting it at once instead of refusing publishes until it expires. Called by
        the drain and again as the worker exits (app/worker.py): the second call waits
        for the first to finish."""
        if self.write_only:
            return
        if self._leaving is not None:
            self._leaving.wait(LEAVE_GRACE + self._settings.redis_socket_timeout)
            return
        self._leaving = self.server.eio.create_event()
        try:
            with contextlib.suppress(RedisError):
                self.publisher().zrem(self.members_key, self.host_id)
            with contextlib.suppress(QueueUnavailable):
                self.publish_message({"method": LEAVE})
                self.server.sleep(LEAVE_GRACE)
        finally:
            self._leaving.set()

    # --- who is alive -------------------------------------------------------
    def _members(self, register: bool) -> SetView:
        if self._members_script is None:
            self._members_script = self.publisher().register_script(_MEMBERS_SCRIPT)
        args = [int(MEMBER_TTL * 1000)] + ([self.host_id] if register else [])
        return SetView(self._members_script(keys=[self.members_key, self.born_key], args=args))

    def _heartbeat_loop(self) -> None:
        while self._leaving is None:
            if self._beat():
                self._heartbeat_hooks()
            self._forget_silent_publishers()
            self.server.sleep(HEARTBEAT)

    def _beat(self) -> bool:
        """Register (once subscribed: before that, others would expect this worker in
        every PUBLISH count and refuse their publishes) and read the live workers;
        True when that view is fresh."""
        if self._leaving is not None or not (self._subscribed or self._registered):
            return False
        try:
            view = self._members(register=True)
        except RedisError as exc:
            self._publishing.failed(exc)
            return False
        self._registered = True
        if self._first_registration is None or view.added:  # (again: the set started anew)
            self._first_registration = view.now
        self._queue_works()  # first: absences after an outage count from now
        self._read(view)
        return self.membership.fresh()

    def _read(self, view: SetView) -> None:
        self.membership.read(view)
        # every other member has registered, so read the set, since this one did
        if (self._first_registration is not None and self.announced is not None
                and all(score > self._first_registration
                        for host, score in view.scores.items() if host != self.host_id)):
            self.announced.set()

    def wait_announced(self, timeout: float = ANNOUNCE_TIMEOUT) -> bool:
        """At boot, before serving: wait until every other live worker knows this one
        (else their publishes could miss its clients and be acked ok), and until this
        one's view is complete (a set born moments ago is still filling: its first
        publishes would be refused). False after `timeout` (Redis unreachable:
        publishes fail meanwhile, and the set's refill covers this worker once Redis
        is back)."""
        if self.write_only or self.announced is None:
            return True
        deadline = time.monotonic() + timeout
        while (not (self.announced.is_set() and self.membership.complete)
               and time.monotonic() < deadline):
            self._beat()  # faster than the heartbeat: workers booting together meet sooner
            self.server.sleep(HEARTBEAT / 10)
        if not (self.announced.is_set() and self.membership.complete):
            # registered even while unsubscribed from now on: the others then refuse
            # publishes that miss this worker's clients instead of acking them ok
            self._registered = True
            log.warning("serving before every worker has seen this one in the message queue "
                        "(%s)", "not subscribed yet" if not self._subscribed
                        else "not read by every other worker yet, or the set is refilling")
            return False
        return True

    def _forget_silent_publishers(self, after: float = 600.0) -> None:
        # One entry per publisher ever heard (each worker start, each CLI run): bounded.
        now = time.monotonic()
        if len(self._last_seq) > 64:
            self._last_seq = {host: last for host, last in self._last_seq.items()
                              if now - last[1] < after}

    def _heartbeat_hooks(self) -> None:
        for hook in self.heartbeat_hooks:
            try:
                hook(set(self.membership.alive))
            except (RedisError, QueueUnavailable) as exc:  # an outage: logged once by it
                self._publishing.failed(exc)
            except Exception:  # a hook must not stop the heartbeat
                log.exception("heartbeat hook failed")

    def _queue_works(self) -> None:
        if self._publishing.restored():
            self.membership.queue_restored()

    def _await_refill(self) -> None:
        """An external emitter, before publishing: a set reborn a moment ago is still
        filling (a just-started deploy, a restarted Redis): wait for it, up to REFILL."""
        view = self._members(register=False)
        if view.born_ms is not None and not view.refilled():
            time.sleep((view.born_ms + REFILL * 1000 - view.now) / 1000)

    def _expected(self, born) -> int | None:
        """How many subscriptions a publish must reach; None while nobody can tell (the
        set is refilling, or was reborn since this view last read it)."""
        if self.write_only:  # an external emitter: the set as Redis has it now
            view = self._members(register=False)
            return len(view.scores) if view.refilled() else None
        if born is NOSCRIPT or _text(born) != self.membership.born or not self.membership.complete:
            return None
        return self.membership.expected()

    # --- publishing -------------------------------------------------------
    def emit(self, event, data, namespace=None, room=None, skip_sid=None, callback=None,
             to=None, **kwargs):
        room = to or room
        namespace = namespace or "/"
        key = self.logged_key(namespace, room, callback, kwargs)
        args = list(data) if isinstance(data, tuple) else [data]
        if key is None or sio_packet.Packet.data_is_binary(args):
            return super().emit(event, data, namespace=namespace, room=room, skip_sid=skip_sid,
                                callback=callback, **kwargs)
        # Logged: stored and published in one step; this worker's sockets get it back
        # through the subscription, in log order with every other worker's events.
        message = _message_with_id(args)
        on_id = None if message is None else (lambda id, m=message: m.__setitem__("stream_id", id))
        entry = Entry.fields(event, args, skip_sid)
        once = getattr(_once, "key", None)
        self.publish_message({"method": "emit", "event": event, "data": args, "binary": False,
                       "namespace": namespace, "room": room, "skip_sid": skip_sid,
                       # no host_id: python-socketio's listener skips its own host's
                       "callback": None},
                      LogWrite(key, entry, on_id, once))
        return None

    def publish_message(self, data, log: LogWrite | None = None):
        self._seq += 1
        # "pub", not python-socketio's "host_id": a callback's host_id is its recipient
        payload = self.json.dumps({**data, "pub": self.host_id, "seq": self._seq,
                                   **({"logged": True} if log is not None else {})})
        if log is not None:  # the offset goes last (APPEND_SCRIPT): head, id, tail
            payload = payload[:-1] + OFFSET_FIELD
        if self._wakeup is None:  # write-only: one caller, in order by itself
            item = _Pending(payload, None, self._seq, log)
            self._publish_batch([item])
        else:
            item = _Pending(payload, self.server.eio.create_event(), self._seq, log)
            self._pending.append(item)
            self._wakeup.set()
            deferred = getattr(_acks, "pending", None)
            if deferred is not None:  # the event's ack waits for it instead
                deferred.append(item)
                return None
            item.event.wait()
        if item.error is not None:
            raise item.error
        return item.receivers

    def _publisher_loop(self) -> None:
        while True:
            if not self._pending:  # (restarted after an error: what waits goes first)
                self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = [self._pending.popleft()
                         for _ in range(min(len(self._pending), MAX_BATCH))]
                try:
                    self._publish_batch(batch)
                finally:
                    for item in batch:
                        if not item.judged:  # an unexpected error: never an ok ack
                            item.error = DeliveryIncomplete("the message may not have "
                                                            "reached every worker")
                        item.event.set()

    def _publish_batch(self, batch: list[_Pending]) -> None:
        """Publish `batch` and judge each item. The caller's error says whether anybody
        may have the message: QueueUnavailable when nobody does (Redis was not
        reached, the script did not run), DeliveryIncomplete when some may (a logged
        message is in the log once its script ran, whatever PUBLISH reached; a plain
        emit of a worker was delivered to its own sockets before it was published)."""
        attempts = self._settings.publish_attempts
        maybe_sent = False
        for attempt in range(1, attempts + 1):
            start_noting()
            try:
                if self.write_only:
                    self._await_refill()
                *counts, born = self._execute(batch)
            except RedisError as exc:
                # Some of the batch may have gone out: receivers drop repeats by seq.
                maybe_sent = maybe_sent or redis_maybe_sent() or not nothing_sent(exc)
                self._publishing.failed(exc)
                metrics.queue_publish_error()
                if attempt < attempts:
                    time.sleep(0.1 * 2 ** (attempt - 1))
                continue
            # (redis-py's reconnect may have hidden a pipeline that ran on a master
            # since replaced: its NOSCRIPTs then say nothing about the first one)
            maybe_sent = maybe_sent or redis_maybe_sent()
            break
        else:
            self._publishing.refused += len(batch)
            for item in batch:
                if maybe_sent or self._delivered_here(item):
                    item.error = DeliveryIncomplete("the message queue failed while publishing: "
                                                    "the message may have reached some workers")
                else:
                    item.error = QueueUnavailable("the message queue is unavailable: the "
                                                  "message was not sent")
                item.judged = True
                metrics.queue_published("failed")
            return
        self._queue_works()
        try:
            expected = self._expected(born)
        except RedisError as exc:  # (an external emitter reads the set): nobody can tell
            self._publishing.failed(exc)
            expected = None
        for item, receivers in zip(batch, counts, strict=True):
            item.judged = True
            if receivers is NOSCRIPT:
                outcome, why, nobody = "failed", "the message was not sent", not maybe_sent
            else:
                if item.log is not None:
                    stream_id, receivers = receivers
                    if stream_id and item.log.on_id is not None:
                        item.log.on_id(_text(stream_id))
                item.receivers = receivers
                if expected is None:
                    why = "the workers are registering again"
                elif receivers < expected:
                    why = f"{receivers} of {expected} workers received the message"
                else:
                    metrics.queue_published("ok")
                    continue
                outcome = "partial"
                # nobody has it: no subscription, no log, no earlier attempt that ran
                nobody = receivers == 0 and item.log is None and not maybe_sent
            if nobody and not self._delivered_here(item):
                item.error = QueueUnavailable(f"the message queue is recovering: {why}")
            else:
                item.error = DeliveryIncomplete(f"the message queue is recovering: {why}")
            self._publishing.refused += 1
            metrics.queue_published(outcome)

    def _delivered_here(self, item: _Pending) -> bool:
        """A plain emit of a worker reached its own sockets before it was published
        (python-socketio's PubSubManager); a logged one comes back through Redis."""
        return item.log is None and not self.write_only

    def _execute(self, batch: list[_Pending]) -> list:
        """One pipeline: the batch's publishes and log appends, then the set's birth
        (reborn since the last read: refilling). Scripts go as EVALSHA at once
        (redis-py's pipelines ask SCRIPT EXISTS first: a second round trip per batch).
        A Redis that lost them (restarted) answers NOSCRIPT: those appends did not run
        and are refused (never sent again: a later seq of this worker may have gone
        out, and receivers would drop theirs as a repeat), and without the birth the
        whole batch is; the scripts are loaded for the next one."""
        client = self.publisher()
        if not self._scripts_loaded:
            self._load_scripts(client)
        pipe = client.pipeline(transaction=False)
        for item in batch:
            if item.log is None:
                pipe.publish(self.channel, item.payload)
            else:
                self._append(pipe, item)
        pipe.evalsha(_BORN_SHA, 1, self.born_key)
        results = pipe.execute(raise_on_error=False)
        lost = [isinstance(result, NoScriptError) for result in results]
        if any(lost):
            self._load_scripts(client)
        for result, missing in zip(results, lost, strict=True):
            if isinstance(result, Exception) and not missing:
                raise result
        return [NOSCRIPT if missing else result for result, missing in zip(results, lost,
                                                                            strict=True)]

    def _load_scripts(self, client) -> None:
        self._scripts_loaded = False
        pipe = client.pipeline(transaction=False)
        pipe.script_load(APPEND_SCRIPT)
        pipe.script_load(_BORN_SCRIPT)
        pipe.execute()
        self._scripts_loaded = True

    def _append(self, pipe, item: _Pending) -> None:
        log, s = item.log, self._settings
        keys = [log.key, self.log.last_key] + ([log.once] if log.once else [])
        pipe.evalsha(_APPEND_SHA, len(keys), *keys, self.channel, item.payload, '"}', log.entry,
                     self.log.max_length, int(self.log.max_age * 1000), self.host_id, item.seq,
                     int(s.idempotency_window_seconds * 1000))

    # --- receiving --------------------------------------------------------
    def on_emit_message(self, message):
        # every local delivery, of this worker's emits and of other workers'
        data = message.get("data")
        if isinstance(data, list) and len(data) == 1 and not first_delivery(self.seen, data[0]):
            return None
        if message.get("logged"):
            return self.deliver_logged(message["event"], data, message.get("namespace") or "/",
                                       message.get("room"), message.get("skip_sid"),
                                       message.get("offset"), message.get("again") is True)
        return super().on_emit_message(message)

    def listen_with_retries(self):
        # python-socketio's loop, with the pause capped at MAX_RESUBSCRIBE_DELAY (so
        # emits resume seconds after Redis is back) and one log line per outage.
        retry_sleep = 0.5
        while True:
            try:
                if not self._subscribed:
                    self.connect_redis()
                    self.pubsub.subscribe(self.channel)
                    self._subscribed = True
                    retry_sleep = 0.5
                    if self._subscription.restored():
                        self.membership.queue_restored()
                    self._beat()  # registered at once, within the set's refill
                    self._read_position()
                yield from self.pubsub.listen()
            except Exception as exc:
                self._subscribed = False
                self._subscription.failed(exc)
                time.sleep(retry_sleep)
                retry_sleep = min(retry_sleep * 2, MAX_RESUBSCRIBE_DELAY)

    def _read_position(self) -> None:
        """On every subscribe, the position moves up to the log's top: what was logged
        while this worker was not subscribed (a new worker, a broken subscription) is
        owed to the sockets that enter a room from now on by their history or replay,
        not by a repeat. Unread, the next message moves it."""
        if self.log is None or not self.log.enabled:
            return
        with contextlib.suppress(RedisError, ValueError, AttributeError):
            top = self.publisher().hget(self.log.last_key, "last")
            if top is not None:
                top = parse_id(_text(top))
                if self.position is None or top > self.position:
                    self.position = top

    def received_messages(self):
        for message in super().received_messages():
            try:
                data = self.json.loads(message)
                host, seq = data.get("pub"), data.get("seq")
            except (ValueError, AttributeError):
                continue  # not ours: python-socketio would ignore it too
            if host == self.host_id and not data.get("logged"):
                continue  # delivered here when emitted (logged ones come back in order)
            if isinstance(seq, int):
                last, _ = self._last_seq.get(host, (None, 0.0))
                if last is not None and seq <= last:
                    continue  # a publish retried after a broken connection
                if last is not None and seq > last + 1 and host != self.host_id:
                    log.info("missed %d message(s) from worker %s (published while this worker "
                             "was not subscribed: their senders were told)", seq - last - 1, host)
                self._last_seq[host] = (seq, time.monotonic())
            if data.get("method") == LEAVE:
                log.info("worker %s left the message queue", host)
                self.membership.forget(host)
                self._last_seq.pop(host, None)
                continue
            yield data


def create_manager(settings: Settings, *, write_only: bool = False,
                   logged: dict[str, str] | None = None):
    """The manager for MESSAGE_QUEUE_URL, with its event log (app/core/history.py):
    `logged` maps a namespace to the prefix of its rooms whose broadcasts are logged."""
    prefix = settings.message_queue_channel
    if not settings.uses_redis:
        if write_only:
            raise RuntimeError("an external emitter needs MESSAGE_QUEUE_URL: with the "
                               "in-memory manager only the server process reaches clients")
        manager = LocalManager(SeenMessages(settings.idempotency_window_seconds))
        manager.log = EventLog(None, prefix, settings.history_max_length,
                               settings.history_max_age_seconds)
    else:
        seen = None if write_only else SeenMessages(settings.idempotency_window_seconds)
        manager = RedisQueueManager(settings, write_only=write_only, seen=seen)
        manager.log = EventLog(manager.publisher, prefix, settings.history_max_length,
                               settings.history_max_age_seconds)
    manager.log.logged.update(logged or {})
    return manager
