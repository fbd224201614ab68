"""Routed fan-out: a worker subscribes to the channels of the rooms it holds.

Broadcasts to a routed room (a room of a namespace's `logged_rooms` prefix: the chat
rooms) go on that room's own channel, `<channel>:room:<namespace>:<room>`, which only
the workers holding a member of the room subscribe to. Everything else (namespace-wide
broadcasts, other rooms, a socket elsewhere, python-socketio's disconnect and
close_room, a worker leaving) stays on the shared channel every worker reads. A worker
that holds none of a room's members then spends nothing on its messages, so a
deployment's message rate grows with its workers.

The guarantee stays per room: a publish to a routed room reads the room's holders (a
Redis set of worker ids) in the same script as its PUBLISH, and must reach every live
one (`Membership.alive`). A worker is a holder only while subscribed: it subscribes,
waits for Redis to confirm, then adds itself; it removes itself before unsubscribing,
ROUTE_LINGER seconds after its last local member left (a re-join meanwhile costs
nothing). A holder whose subscription broke is still in the set, so publishes to its
rooms are refused until it is back. A worker that does not route (an earlier release
during a rolling deploy, or MESSAGE_QUEUE_ROUTING=false) reads the shared channel
alone: while one is alive, rooms' messages go on the shared channel, and a publish
that went to a room's channel meanwhile expects it too (refused, never acked ok
without it). Routing workers say so by their id (`ROUTING_MARK`). A Redis that
lost the sets (restarted) lost the
set of live workers too: every worker registers again, its rooms with it, while that
set refills (publishes are refused meanwhile: app/core/queue/membership.py). A
worker that died leaves its entries; the others reap them (two heartbeats absent).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from redis.exceptions import RedisError

from app.core.errors import QueueUnavailable
from app.core.history import parse_id
from app.core.queue.membership import MEMBER_TTL, AbsentTwice
from app.core.queue.scripts import decoded

log = logging.getLogger("app.core.queue")

# Seconds a room with no local member stays subscribed (re-joins within are free).
ROUTE_LINGER = 2.0

READY, PENDING, LEAVING, FAILED = "ready", "pending", "leaving", "failed"

# The end of a routing worker's id (python-socketio's are uuid4 hex: no "-").
ROUTING_MARK = "-r"


def routes_everywhere(alive) -> bool:
    """Does every live worker read the rooms' channels?"""
    return all(host.endswith(ROUTING_MARK) for host in alive)


def expected_of(alive: set[str], holders, registered) -> int:
    """The live workers a publish to a room's channel must reach: its holders; any
    worker that does not route (it cannot have heard it: the publish is refused); and
    any routing worker that has not registered its rooms since the set of live
    workers started anew (its entries may be lost with a restarted Redis)."""
    holders, registered = set(map(decoded, holders)), set(map(decoded, registered))
    return sum(1 for host in alive if host in holders or not host.endswith(ROUTING_MARK)
               or host not in registered)


# A gone worker's holder entries, unless it is in the set of live workers again (it
# registered again since it was found missing: its entries are current). KEYS: the
# set of live workers, its index of channels, the routing workers; ARGV: the worker,
# the holders' suffix. Returns how many rooms were reaped, or -1.
REAP_SCRIPT = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return -1 end
local channels = redis.call('SMEMBERS', KEYS[2])
for _, channel in ipairs(channels) do redis.call('SREM', channel .. ARGV[2], ARGV[1]) end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
return #channels
"""


class Route:
    __slots__ = ("floor", "idle_since", "namespace", "room", "state")

    def __init__(self, namespace: str, room: str) -> None:
        self.namespace = namespace
        self.room = room
        self.state = PENDING
        self.idle_since: float | None = None
        # the newest id of the room's log when this worker subscribed: a socket that
        # enters the room here had what is up to it from the room's history
        self.floor: tuple[int, int] | None = None


class Routing:
    """RedisQueueManager's room subscriptions and its entries in the rooms' holders."""

    def _init_routes(self) -> None:
        self.routed: dict[str, str] = {}  # namespace -> prefix of its routed rooms
        self.routes: dict[str, Route] = {}  # channel -> its route
        self._idle: set[str] = set()  # channels whose last local member left
        self._confirm: dict[str, Any] = {}  # channel -> event: its SUBSCRIBE confirmed
        self._route_lock = threading.Lock()  # (green under eventlet and gevent)
        self._listener: int | None = None  # the listener's thread (greenlet) id
        self._absent = AbsentTwice()  # workers with holder entries, absent at the last beat
        self._reap = None
        self.routes_key = f"{self.channel}:routes"

    def routes_everywhere_now(self) -> bool:
        """Does this worker route, and every live worker it knows?"""
        return bool(self.routed) and routes_everywhere(self.membership.alive)

    # --- names ----------------------------------------------------------------------
    def route_of(self, namespace: str | None, room: Any) -> str | None:
        """The channel of a routed room; None: the message goes on the shared channel."""
        if not isinstance(room, str):
            return None
        prefix = self.routed.get(namespace or "/")
        if prefix is None or not room.startswith(prefix):
            return None
        return f"{self.channel}:room:{namespace or '/'}:{room}"

    @staticmethod
    def holders_key(channel: str) -> str:
        return channel + ":holders"

    def _index_key(self, host: str) -> str:
        return f"{self.routes_key}:{host}"

    # --- entering and leaving -----------------------------------------------------------
    # (the rooms are the first partition's, shared: a room's route is its partition's)
    def basic_enter_room(self, sid, namespace, room, eio_sid=None):
        if room == sid:
            return super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        queue = self.partition_for(namespace, room)
        queue.route(namespace, room)
        try:
            return super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        finally:  # (python-socketio refused it: the sid is gone, say)
            queue._idle_if_empty(namespace, room)

    def basic_leave_room(self, sid, namespace, room):
        result = super().basic_leave_room(sid, namespace, room)
        self.partition_for(namespace, room)._idle_if_empty(namespace, room)
        return result

    def _idle_if_empty(self, namespace: str, room) -> None:
        channel = self.route_of(namespace, room)
        route = self.routes.get(channel) if channel else None
        if route is not None and not self.rooms.get(namespace, {}).get(room):
            if channel not in self._idle:
                route.idle_since = time.monotonic()
            self._idle.add(channel)

    def entered_floor(self, namespace: str, room) -> tuple[int, int] | None:
        queue = self.partition_for(namespace, room)
        if queue is not self:
            return queue.entered_floor(namespace, room)
        route = self.routes.get(self.route_of(namespace, room) or "")
        floor = route.floor if route is not None else None
        if self.position is None or floor is None:
            return self.position or floor
        return max(self.position, floor)

    def route(self, namespace: str, room) -> None:
        """Subscribed to the room's channel and registered as its holder, or
        QueueUnavailable (the socket must not enter: publishes would not expect it)."""
        channel = self.route_of(namespace, room)
        if channel is None or self.write_only:
            return
        route = self.routes.get(channel)
        if route is not None and route.state == READY:
            self._idle.discard(channel)
            return
        listener = threading.get_ident() == self._listener
        # (the listener cannot wait for a join that waits for a confirmation it reads)
        if not self._route_lock.acquire(blocking=not listener):
            raise QueueUnavailable("the message queue is busy: the room cannot be entered now")
        try:
            route = self.routes.get(channel)
            if route is not None and route.state == READY:
                self._idle.discard(channel)
                return
            if not self._subscribed:
                raise QueueUnavailable("the message queue is unavailable: the room cannot be "
                                       "entered now")
            if route is None:
                route = self.routes[channel] = Route(namespace, room)
            route.state = PENDING
            try:
                self._subscribe_route(channel, wait=not listener)
                self._register([route], floors=True)
            except (RedisError, QueueUnavailable) as exc:
                # maybe subscribed, maybe a holder: the sweep takes it out of both
                route.state, route.idle_since = FAILED, time.monotonic() - ROUTE_LINGER
                self._idle.add(channel)
                raise QueueUnavailable(f"the message queue is unavailable: the room cannot be "
                                       f"entered now ({exc})") from exc
            route.state = READY
        finally:
            self._route_lock.release()

    def _subscribe_route(self, channel: str, wait: bool) -> None:
        confirmed = self._confirm[channel] = self.server.eio.create_event()
        try:
            self.pubsub_commands.subscribe(self.pubsub, channel)
            if wait and not confirmed.wait(self._settings.redis_socket_timeout):
                raise QueueUnavailable("Redis did not confirm the subscription")
        finally:
            self._confirm.pop(channel, None)

    def route_confirmed(self, channel) -> None:
        """The listener read Redis's confirmation of a SUBSCRIBE."""
        event = self._confirm.get(decoded(channel))
        if event is not None:
            event.set()

    def route_channels(self) -> list[str]:
        """The room channels a (re)subscribe subscribes to."""
        return list(self.routes)

    def registered_key(self, born: str | None) -> str:
        """The routing workers that registered their rooms since the set's birth."""
        return f"{self.routes_key}:at:{born or ''}"

    def _register(self, routes: list[Route], floors: bool = False, born: str | None = None,
                  pipe=None) -> list:
        """This worker as a holder of `routes` (and in the index the reaper reads); with
        `floors`, their logs' newest ids read too; with `born`, marked as registered
        for that birth of the set (after the holders: a publisher that sees the mark
        finds them)."""
        pipe = pipe if pipe is not None else self.publisher().pipeline(transaction=False)
        pipe.sadd(self.routes_key, self.host_id)
        index = self._index_key(self.host_id)
        for route in routes:
            channel = self.route_of(route.namespace, route.room)
            pipe.sadd(self.holders_key(channel), self.host_id)
            pipe.sadd(index, channel)
        if born is not None:
            pipe.sadd(self.registered_key(born), self.host_id)
            pipe.pexpire(self.registered_key(born), int(MEMBER_TTL * 4000))  # (as the set)
        logged = []
        for route in routes:
            key = self.log.key_for(route.namespace, route.room) if floors and self.log else None
            if key is not None:
                pipe.xrevrange(key, count=1)
                logged.append(route)
        results = pipe.execute()
        for route, top in zip(logged, results[len(results) - len(logged):], strict=True):
            route.floor = parse_id(decoded(top[0][0])) if top else None
        return results

    def register_routes(self, born: str) -> bool:
        """This worker's rooms in their holders again, and marked registered for `born`
        (the set of live workers started anew: a restarted Redis, or this worker
        dropped from it). Entries of rooms it no longer holds (brought back by an
        append-only file) are taken out first. False: a join or a sweep is changing
        the rooms (tried again at the next heartbeat; meanwhile it is expected in
        every room)."""
        if not self._route_lock.acquire(blocking=False):
            return False
        try:
            r = self.publisher()
            held = {decoded(c) for c in r.smembers(self._index_key(self.host_id))}
            current = [route for route in self.routes.values() if route.state == READY]
            stale = held - {self.route_of(route.namespace, route.room) for route in current}
            pipe = r.pipeline(transaction=False)
            for channel in stale:
                pipe.srem(self.holders_key(channel), self.host_id)
                pipe.srem(self._index_key(self.host_id), channel)
            self._register(current, born=born, pipe=pipe)
            return True
        finally:
            self._route_lock.release()

    # --- unsubscribing ------------------------------------------------------------------
    def sweep_routes(self, now: float | None = None) -> None:
        """Unsubscribe the rooms whose last local member left ROUTE_LINGER ago (and
        those whose join failed halfway)."""
        now = time.monotonic() if now is None else now
        for channel in list(self._idle):
            route = self.routes.get(channel)
            if route is None:
                self._idle.discard(channel)
                continue
            if route.state not in (READY, FAILED):
                continue  # (a join under way: looked at again once it ended)
            if self.rooms.get(route.namespace, {}).get(route.room):
                self._idle.discard(channel)  # (entered again)
                continue
            if route.idle_since is None or now - route.idle_since < ROUTE_LINGER:
                continue
            # (the heartbeat's: never held up by a join waiting for its confirmation)
            if not self._route_lock.acquire(blocking=False):
                return
            state, route.state = route.state, LEAVING  # (a join now waits, then subscribes)
            try:
                pipe = self.publisher().pipeline(transaction=False)
                pipe.srem(self.holders_key(channel), self.host_id)
                pipe.srem(self._index_key(self.host_id), channel)
                pipe.execute()
            except RedisError:
                route.state = state  # still a holder: again at the next sweep
                return  # (Redis is down: the heartbeat must not wait on every room)
            else:
                self._idle.discard(channel)
                del self.routes[channel]
                # (a broken subscription: the resubscribe leaves it out)
                with contextlib.suppress(RedisError, AttributeError):
                    self.pubsub_commands.unsubscribe(self.pubsub, channel)
            finally:
                self._route_lock.release()

    def unregister_routes(self) -> None:
        """A worker leaving: out of every holders set, and no longer subscribed to
        them (a subscriber that is not a holder would stand in for a holder that
        missed a message in PUBLISH's count)."""
        channels = list(self.routes)
        pipe = self.publisher().pipeline(transaction=False)
        for channel in channels:
            pipe.srem(self.holders_key(channel), self.host_id)
        pipe.delete(self._index_key(self.host_id))
        pipe.srem(self.routes_key, self.host_id)
        pipe.execute()
        if channels:
            with contextlib.suppress(RedisError, AttributeError):
                self.pubsub_commands.unsubscribe(self.pubsub, *channels)

    def reap_routes(self, alive: set[str]) -> None:
        """Each heartbeat with a fresh view: the holder entries of workers absent from
        it in two heartbeats in a row (a worker just starting is not in it yet), unless
        it has registered again meanwhile (checked in the script)."""
        r = self.publisher()
        hosts = {decoded(host) for host in r.smembers(self.routes_key)}
        for host in self._absent.gone(hosts, alive, self.host_id):
            if self._reap is None:
                self._reap = r.register_script(REAP_SCRIPT)
            reaped = self._reap(keys=[self.members_key, self._index_key(host), self.routes_key],
                                args=[host, ":holders"])
            if reaped >= 0:
                log.info("worker %s is gone: its entries in %d room(s) reaped", host, reaped)
