"""One ordered publisher per worker: batches, the append script, the judgement of each publish."""

from __future__ import annotations

import time

from redis.exceptions import NoScriptError, RedisError
from socketio import packet as sio_packet

from app.adapters.redis_hooks import maybe_sent as redis_maybe_sent
from app.adapters.redis_hooks import nothing_sent, start_noting
from app.core import metrics
from app.core.errors import DeliveryIncomplete, QueueUnavailable
from app.core.history import Entry
from app.core.queue.delivery import LogWrite, deferred, message_with_id, once_key
from app.core.queue.routes import expected_of
from app.core.queue.scripts import (
    BORN_SCRIPT,
    BORN_SHA,
    NOSCRIPT,
    OFFSET_FIELD,
    decoded,
)

# Messages published in one pipeline at most (one round trip for a busy worker).
MAX_BATCH = 256


class Pending:
    __slots__ = ("error", "event", "judged", "log", "payload", "receivers", "route", "seq")

    def __init__(self, payload: str, event, seq: int, log: LogWrite | None = None,
                 route: str | None = None) -> None:
        self.payload = payload
        self.event = event
        self.seq = seq
        self.log = log
        self.route = route  # a routed room's channel (app/core/queue/routes.py), or None
        self.error: QueueUnavailable | None = None
        self.judged = False  # an unexpected error before its judgement is not an "ok"
        self.receivers = 0


class Publisher:
    """RedisQueueManager's publishes."""

    _sent_born: str | None = None  # the birth of the set the last batch was built for

    def emit(self, event, data, namespace=None, room=None, skip_sid=None, callback=None,
             to=None, **kwargs):
        room = to or room
        namespace = namespace or "/"
        queue = self.partition_for(namespace, room) if not kwargs.get("ignore_queue") else self
        if queue is not self:  # a room of another partition: its queue publishes it
            return queue.emit(event, data, namespace=namespace, room=room, skip_sid=skip_sid,
                              callback=callback, **kwargs)
        if (isinstance(room, str) and not kwargs.get("ignore_queue")
                and self.is_connected(room, namespace)):
            # a socket of this worker (its own room): nobody else has it to deliver
            return super().emit(event, data, namespace=namespace, room=room, skip_sid=skip_sid,
                                callback=callback, ignore_queue=True)
        key = self.logged_key(namespace, room, callback, kwargs)
        args = list(data) if isinstance(data, tuple) else [data]
        if key is None or sio_packet.Packet.data_is_binary(args):
            return super().emit(event, data, namespace=namespace, room=room, skip_sid=skip_sid,
                                callback=callback, **kwargs)
        # Logged: stored and published in one step; this worker's sockets get it back
        # through the subscription, in log order with every other worker's events.
        message = message_with_id(args)
        on_id = None if message is None else (lambda id, m=message: m.__setitem__("stream_id", id))
        entry = Entry.fields(event, args, skip_sid)
        once = once_key()
        if once is not None and self.partition:  # (read in the append: the room's slot)
            once = self.channel + once.removeprefix(self._settings.message_queue_channel)
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
        # (an external emitter does not know whether every worker routes: not routed)
        route = self.route_of(data.get("namespace"), data.get("room")) if (
            data.get("method") == "emit" and not self.write_only
            and self.routes_everywhere_now()) else None
        if self._wakeup is None:  # write-only: one caller, in order by itself
            item = Pending(payload, None, self._seq, log, route)
            self._publish_batch([item])
        else:
            item = Pending(payload, self.server.eio.create_event(), self._seq, log, route)
            self._pending.append(item)
            self._wakeup.set()
            waiting = deferred()
            if waiting is not None:  # the event's ack waits for it instead
                waiting.append(item)
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

    def _publish_batch(self, batch: list[Pending]) -> None:
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
            # (the marks the batch read were of the birth known when it was sent)
            alive = self._alive(born) if self._sent_born == self.membership.born else None
        except RedisError as exc:  # (an external emitter reads the set): nobody can tell
            self._publishing.failed(exc)
            alive = None
        for item, receivers in zip(batch, counts, strict=True):
            item.judged = True
            if receivers is NOSCRIPT:
                outcome, why, nobody = "failed", "the message was not sent", not maybe_sent
            else:
                holders = registered = None
                if item.log is not None:
                    stream_id, receivers, holders, registered = receivers
                    if stream_id and item.log.on_id is not None:
                        item.log.on_id(decoded(stream_id))
                elif item.route is not None:
                    receivers, holders, registered = receivers
                item.receivers = receivers
                # every live worker, or those of them holding the room
                expected = None if alive is None else len(alive) if holders is None else (
                    expected_of(alive, holders, registered))
                if expected is None:
                    why = ("a worker with another MESSAGE_QUEUE_PARTITIONS is live"
                           if self.partitions[0].foreign else "the workers are registering again")
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

    def _delivered_here(self, item: Pending) -> bool:
        """A plain emit of a worker reached its own sockets before it was published
        (python-socketio's PubSubManager); a logged one comes back through Redis."""
        return item.log is None and not self.write_only

    def _execute(self, batch: list[Pending]) -> list:
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
        self._sent_born = self.membership.born
        marks = self.registered_key(self._sent_born)  # (routed publishes read them)
        pipe = client.pipeline(transaction=False)
        for item in batch:
            if item.log is not None:
                self._append(pipe, item, marks)
            elif item.route is not None:
                pipe.evalsha(self.scripts.route_sha, 2, self.holders_key(item.route), marks, item.route,
                             item.payload)
            else:
                self.pubsub_commands.publish(pipe, self.channel, item.payload)
        pipe.evalsha(BORN_SHA, 1, self.born_key)
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
        pipe.script_load(self.scripts.append)
        pipe.script_load(self.scripts.route)
        pipe.script_load(BORN_SCRIPT)
        pipe.execute()
        self._scripts_loaded = True

    def _append(self, pipe, item: Pending, marks: str) -> None:
        log, s, route = item.log, self._settings, item.route
        keys = [log.key, self.log.last_key] + (
            [self.holders_key(route), marks] if route else []) + ([log.once] if log.once else [])
        pipe.evalsha(self.scripts.append_sha, len(keys), *keys, route or self.channel, item.payload, '"}',
                     log.entry, self.log.max_length, int(self.log.max_age * 1000), self.host_id,
                     item.seq, int(s.idempotency_window_seconds * 1000), "1" if route else "0")
