"""The message queue: python-socketio client managers chosen by MESSAGE_QUEUE_URL.

- empty URL: `LocalManager`, in memory, one process;
- redis://, rediss://, unix://, redis+sentinel://, redis+cluster:// (one slot, sharded
  pub/sub: app/adapters/redis_cluster.py): `RedisQueueManager`, which every
  worker (and any external emitter) shares through Redis pub/sub: one channel every
  worker reads, and one per routed room, read by the workers holding its members
  (`routes`: a worker spends nothing on the messages of rooms it does not hold).

The guarantee (docs/architecture.md, "The message queue"): **an emit whose publish
returns has been handed by Redis to the subscription of every live worker (for a
routed room: of every live worker holding a member of it), in the order this worker
published it; otherwise the caller gets QueueUnavailable.**

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
- Nothing counted is lost to a subscription (`Receiver._catch_up`): PUBLISH counts a
  subscription when the message is queued on it, and a Redis killed before writing
  it out loses it there. Every resubscribe reads the log after the worker's position
  in the rooms it has sockets in and delivers what it missed, in order, before the
  new subscription's messages (history on, and Redis with an append-only file).
- Outages are logged once when they start and once when they end, with counts.

Modules: `redis_manager` (the manager: connections, start), `publisher` (the ordered
publisher and the judgement of each publish), `receiver` (the subscription, repeats
dropped), `routes` (the rooms' channels and holders), `membership` (the set of live
workers), `delivery` (logged events to this worker's sockets), `scripts` (Lua),
`pubsub` (classic or sharded), `partitions` (rooms spread over several such queues,
each under its own hash tag: MESSAGE_QUEUE_PARTITIONS), `local` (the in-memory manager).
"""

from __future__ import annotations

from app.core.history import EventLog, PartitionedLog
from app.core.idempotency import SeenMessages
from app.core.queue.delivery import deferred_acks, logged_once, publish_now
from app.core.queue.local import LocalManager
from app.core.queue.membership import MEMBER_TTL, Membership, SetView
from app.core.queue.partitions import partition_of
from app.core.queue.redis_manager import RedisQueueManager
from config.settings import Settings

__all__ = ["MEMBER_TTL", "LocalManager", "Membership", "RedisQueueManager", "SetView",
           "create_manager", "deferred_acks", "logged_once", "publish_now"]


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
        manager.logs = manager.log
    else:
        seen = None if write_only else SeenMessages(settings.idempotency_window_seconds)
        count = settings.message_queue_partitions
        queues = [RedisQueueManager(settings, write_only=write_only, seen=seen, partition=index)
                  for index in range(count)]
        for queue in queues:
            queue.log = EventLog(queue.publisher, queue.channel, settings.history_max_length,
                                 settings.history_max_age_seconds)
            queue.log.logged = queues[0].log.logged  # (one dict: namespaces add to it)
            queue.log.partition = queue.partition
            if count > 1:
                queue.log.owns = (lambda namespace, room, index=queue.partition:
                                  partition_of(count, namespace, room) == index)
            if settings.message_queue_routing:  # the logged rooms are the routed ones
                queue.routed = queues[0].routed
        manager = queues[0]
        manager.add_partitions(queues[1:])
        manager.logs = manager.log if count == 1 else PartitionedLog(
            [queue.log for queue in queues],
            lambda namespace, room: partition_of(count, namespace, room))
        if settings.message_queue_routing:
            manager.routed.update(logged or {})
    manager.log.logged.update(logged or {})
    return manager
