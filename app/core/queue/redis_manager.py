"""The Redis manager: every worker (and any external emitter) shares one pub/sub channel."""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from collections.abc import Callable
from urllib.parse import urlparse

import redis
import redis.sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from socketio.redis_manager import parse_redis_sentinel_url

from app.adapters import redis_cluster
from app.adapters.redis_hooks import NotingRetry, resubscribe_only_by_hand
from app.adapters.socketio_hooks import RedisManagerHooks, RoomIndex
from app.core.control import RedisControlBus, control_key
from app.core.idempotency import SeenMessages
from app.core.lifecycle import supervised
from app.core.outage import Outage
from app.core.queue.delivery import LoggedDelivery
from app.core.queue.membership import Heartbeat, Membership
from app.core.queue.partitions import partition_channel, partition_mark, partition_of
from app.core.queue.publisher import Pending, Publisher
from app.core.queue.pubsub import CLASSIC, SHARDED
from app.core.queue.receiver import Receiver
from app.core.queue.routes import ROUTING_MARK, Routing
from app.core.queue.scripts import PublishScripts
from app.core.queue.ticks import Ticks
from config.settings import Settings


class RedisQueueManager(Heartbeat, Ticks, Publisher, Receiver, Routing, LoggedDelivery,
                        RoomIndex, RedisManagerHooks):
    repeats = True  # a logged event can come again: a client_id's retry (LoggedDelivery)

    def __init__(self, settings: Settings, *, write_only: bool = False,
                 logger: logging.Logger | None = None, seen: SeenMessages | None = None,
                 partition: int = 0) -> None:
        count = settings.message_queue_partitions
        super().__init__(url=settings.message_queue_url,
                         channel=partition_channel(settings.message_queue_channel, partition, count),
                         write_only=write_only, logger=logger)
        self._settings = settings
        self.partition = partition
        self._slot_owner = None  # on a Redis Cluster: the master of the channel's slot
        self.pubsub_commands = SHARDED if settings.uses_redis_cluster else CLASSIC
        self.scripts = PublishScripts(self.pubsub_commands)
        if count > 1:  # (a worker of another count is refused: partitions.foreign_workers)
            self.host_id += partition_mark(count)
        if settings.message_queue_routing and not write_only:
            self.host_id += ROUTING_MARK  # (the others know it reads its rooms' channels)
        # live workers whose partitions differ from this one's (the first partition's
        # heartbeat finds them): every publish is refused while there are any
        self.foreign: set[str] = set()
        self.seen = seen
        self._init_delivery()
        self._init_routes()
        # the birth of the set of live workers its rooms' holders were registered for
        self._routes_born: str | None = None
        self.members_key = self.channel + ":workers"
        self.born_key = self.members_key + ":born"
        self.membership = Membership()
        self.announced = None  # an event: every other live worker has read this one
        self._first_registration: float | None = None  # Redis ms
        self._seq = 0
        # host_id -> (last seq received from it, when): repeats and gaps per publisher
        self._last_seq: dict[str, tuple[int, float]] = {}
        self._pending: collections.deque[Pending] = collections.deque()
        self._wakeup = None
        self._subscribed = False
        self._registered = False
        self._leaving = None  # an event once leave() has started
        named = f" (partition {partition})" if partition else ""
        self._publishing = Outage("publish" + named)  # publishes and this worker's registration
        self._subscription = Outage("subscription" + named)
        self._members_script = None
        # Are APPEND_SCRIPT and BORN_SCRIPT in this Redis's script cache? Loaded before
        # the first batch and after every resubscribe (a restarted Redis has none: a
        # batch's EVALSHA would fail with NOSCRIPT and its message be refused).
        self._scripts_loaded = False
        # Called by the heartbeat with the live workers' ids when this worker's view of
        # them is fresh (presence and shared connection counts keep their per-worker
        # entries alive; presence reaps a dead worker's: app/core/presence.py).
        self.heartbeat_hooks: list[Callable[[set[str]], None]] = []
        self.control = RedisControlBus(self.publisher, settings.message_queue_channel + ":control",
                                       timeout=settings.gather_timeout,
                                       key=control_key(settings), pubsub=self.pubsub_commands,
                                       moved=self.queue_moved) if partition == 0 else None
        self.heartbeat_hooks.append(self.reap_routes)

    def add_partitions(self, others: list[RedisQueueManager]) -> None:
        """The queues of the other partitions, sharing this one's sockets and rooms
        (the server knows this manager alone: it hands each partition its rooms')."""
        self.partitions = [self, *others]
        if others:
            self.delivering = threading.Lock()  # (green under eventlet and gevent)
        for other in others:
            other.partitions = self.partitions
            other.host_id = self.host_id  # (one worker, whichever partition it is in)
            for name in ("rooms", "rooms_of", "eio_to_sid", "callbacks", "pending_connect",
                         "pending_disconnect", "offset_sids", "replaying", "entered", "seen",
                         "delivering"):
                setattr(other, name, getattr(self, name))

    def partition_for(self, namespace: str, room) -> RedisQueueManager:
        """The queue of a logged room's partition (the namespace's announcements: room
        None); the first partition's for anything else."""
        queues = self.partitions
        if len(queues) == 1:
            return self
        if self.log is None or not self.log.logs_room(namespace, room):
            return queues[0]
        return queues[partition_of(len(queues), namespace, room)]

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
        # A subscription is never reconnected by redis-py: the listener does, and
        # catches up from the log (Receiver._catch_up). (redis-py's retry reconnects
        # and subscribes again before it counts the attempts, even with none allowed:
        # no error is one it retries, or a subscription the listener has given up
        # would be counted by publishes, its messages never read.)
        options: dict = {"socket_keepalive": True, "health_check_interval": 30,
                         "socket_connect_timeout": s.redis_socket_timeout,
                         "retry": NotingRetry(NoBackoff(), 1) if for_publishing
                         else Retry(NoBackoff(), 0, supported_errors=())}
        if for_publishing:
            options["socket_timeout"] = s.redis_socket_timeout
        url = s.message_queue_url
        if s.uses_redis_cluster:
            if self._slot_owner is None:  # (one per worker: its connections follow it)
                self._slot_owner = redis_cluster.slot_owner(url, self.channel)
            if not for_publishing:
                return redis_cluster.cluster_client(self._slot_owner, **options)
            return redis_cluster.cluster_client(
                self._slot_owner, pool_class=redis.BlockingConnectionPool,
                max_connections=s.redis_max_connections, timeout=s.redis_pool_timeout, **options)
        if urlparse(url).scheme == "redis+sentinel":
            sentinels, service, extra = parse_redis_sentinel_url(url)
            sentinel = redis.sentinel.Sentinel(sentinels, **{**options, **extra})
            return sentinel.master_for(service or s.message_queue_channel,
                                       max_connections=s.redis_max_connections)
        if not for_publishing:
            return redis.Redis.from_url(url, **options)
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=s.redis_max_connections, timeout=s.redis_pool_timeout, **options)
        return redis.Redis(connection_pool=pool)

    def queue_moved(self, address: tuple[str, int] | None = None) -> None:
        """Redis ended a subscription (a Redis Cluster's slot moved): the next connect
        asks the cluster where the slot is now."""
        if self._slot_owner is not None:
            self._slot_owner.moved(address)

    def connect_redis(self) -> None:
        # Called by the listener on every (re)subscribe: a fresh subscription,
        # while the publisher's pool stays (it reconnects by itself).
        if self.pubsub is not None:
            with contextlib.suppress(RedisError):
                self.pubsub.close()
        self.publisher()
        # (confirmations read: a room's subscriber waits for its own, Routing.route)
        self.pubsub = self.subscriber().pubsub(ignore_subscribe_messages=False)
        resubscribe_only_by_hand(self.pubsub)
        self.connected = True
        self._scripts_loaded = False

    def initialize(self) -> None:
        super().initialize()  # starts python-socketio's listener (_thread)
        for other in self.partitions[1:] if self.partition == 0 else ():
            other.set_server(self.server)
            other.initialize()
        if self.write_only:
            return
        self._wakeup = self.server.eio.create_event()
        self.announced = self.server.eio.create_event()
        self.server.start_background_task(supervised, self.server.sleep, self._publisher_loop)
        self.server.start_background_task(supervised, self.server.sleep, self._heartbeat_loop)
        if self.control is not None:
            self.control.start(self.server.start_background_task, self.subscriber)

    def listeners(self) -> int:
        """How many workers are subscribed to the channel right now."""
        return self.pubsub_commands.subscribers(self.publisher(), self.channel)[0]
