"""The subscription: resubscribing, and dropping repeats by publisher and sequence."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from redis.exceptions import RedisError

from app.core import metrics
from app.core.errors import QueueUnavailable
from app.core.history import format_id, parse_id
from app.core.queue.delivery import first_delivery
from app.core.queue.membership import LEAVE
from app.core.queue.scripts import decoded
from app.core.queue.ticks import TICK

log = logging.getLogger("app.core.queue")

# Longest pause between two resubscribe attempts (python-socketio's grows to 60 s).
MAX_RESUBSCRIBE_DELAY = 1.0


class Receiver:
    """RedisQueueManager's subscription."""

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
        retry_sleep = 0.0  # the first attempt after a break at once, then backing off
        self._listener = threading.get_ident()
        while True:
            try:
                if not self._subscribed:
                    self.connect_redis()
                    self.pubsub_commands.subscribe(self.pubsub, self.channel, *self.route_channels())
                    self._beat()  # registered at once, within the set's refill
                    # (after the beat's round trip, sent after SUBSCRIBE: Redis has taken
                    # the subscription when the catch-up reads the log)
                    self._catch_up()
                    self._subscribed = True
                    self.tick(force=True)  # (with partitions: its position known at once)
                    retry_sleep = 0.0
                    if self._subscription.restored():
                        self.membership.queue_restored()
                commands = self.pubsub_commands
                for message in self.pubsub.listen():
                    if commands.ended(message, self.channel):
                        self.queue_moved()
                        raise RedisError("unsubscribed by Redis from the shared channel")
                    yield message
            except Exception as exc:
                self._subscribed = False
                self._subscription.failed(exc)
                time.sleep(retry_sleep)
                retry_sleep = min(max(retry_sleep * 2, 0.25), MAX_RESUBSCRIBE_DELAY)

    def _catch_up(self) -> None:
        """On every subscribe: up to the log's top.

        A worker that was subscribed before (it has a position) is owed what was logged
        since, in the rooms where it has sockets: Redis counts a subscription in
        PUBLISH's reply once the message is queued for it, and a Redis killed before
        writing it out (or dropping the subscriber at its output buffer's limit) lost it
        for that worker, the sender told ok. Those entries are delivered now, in id
        order, before anything the new subscription brings (which then skips what they
        covered). A log that cannot be read fails the subscribe (tried again, from the
        same position). A new worker moves to the top.
        """
        if self.log is None or not self.log.enabled:
            return
        top = self.publisher().hget(self.log.last_key, "last")
        try:
            top = parse_id(decoded(top)) if top is not None else None
        except ValueError:
            return
        previous = self.position
        if top is None or (previous is not None and top <= previous):
            return
        # a socket entering a room from here on has what is up to `top` from its history
        self.position = top
        if previous is None:
            # (with partitions, `delivered` waits for a tick: events up to `top` may still
            # be on their way through the new subscription, to sockets already here)
            if len(self.partitions) == 1:
                self.delivered = top
            return
        try:
            self._deliver_missed(previous, top)
        except (RedisError, QueueUnavailable):
            self.position = previous  # read again at the next subscribe
            raise
        except Exception:  # (an entry that cannot be read) not again: they are recovered
            log.exception("resubscribed: the log since %s could not be caught up",
                          format_id(previous))
            self._end_for_recovery(self._logged_rooms().values())
        # (the rooms it could not catch up are ended: their sockets are recovered)
        self.delivered = self.position

    def _logged_rooms(self) -> dict[str, tuple[str, Any]]:
        """The logged rooms this worker has sockets in: log key -> (namespace, room)."""
        return {key: (namespace, room) for namespace, members in self.rooms.items()
                for room, sids in members.items()
                if sids and (key := self.log.key_for(namespace, room)) is not None}

    def _deliver_missed(self, previous: tuple[int, int], top: tuple[int, int]) -> None:
        rooms = self._logged_rooms()
        if not rooms:
            return
        settings, after = self._settings, format_id(previous)
        budget = (settings.recovery_max_entries, settings.recovery_max_bytes)
        streams = self.log.snapshot_streams(list(rooms), after, *budget)  # (Redis errors: raised)
        if streams is None:  # over the budget, all rooms together: room by room
            streams = {}
            for key in rooms:
                streams.update(self.log.snapshot_streams([key], after, *budget) or {key: None})
        # a room over the budget, or trimmed past the position: its sockets are ended to
        # come back by their recovery (a replay from their own offset, or a fresh socket
        # that re-joins with `since`), as after any cut connection
        behind = [key for key, read in streams.items() if read is None or read[1] > previous]
        ended = self._end_for_recovery(rooms[key] for key in behind)
        # (ended first: their offsets must not pass what they missed, through the
        # entries of their other rooms delivered now)
        missed = sorted(((key, entry) for key, read in streams.items() if key not in behind
                         for entry in read[0]), key=lambda item: item[1].key)
        if missed:
            self.position = max(top, missed[-1][1].key)
        for key, entry in missed:
            data = entry.data
            if isinstance(data, list) and len(data) == 1 and not first_delivery(self.seen, data[0]):
                continue
            namespace, room = rooms[key]
            try:
                self.deliver_logged(entry.event, data, namespace, room, entry.skip_sid, entry.id,
                                    caught_up=True)
            except Exception:  # not this entry's sockets' loss alone: they are recovered
                log.exception("resubscribed: entry %s of %s could not be delivered", entry.id, key)
                ended += self._end_for_recovery([rooms[key]])
                behind.append(key)
        if missed:
            log.info("resubscribed: %d logged event(s) this worker missed, delivered from the log",
                     len(missed))
        if behind:
            log.warning("resubscribed: %d room(s) missed more than RECOVERY_MAX_ENTRIES or "
                        "_BYTES since %s, or their log was trimmed: %d socket(s) ended to be "
                        "recovered", len(set(behind)), after, ended)
        # what the new subscription brings of these rooms up to here, they had now
        self.covered = (self.position, set(rooms.values()))

    def _end_for_recovery(self, rooms) -> int:
        sessions = {eio_sid for namespace, room in rooms
                    for _, eio_sid in self.get_participants(namespace, room)}
        for eio_sid in sessions:
            self.server.cut_for_recovery(eio_sid)
        return len(sessions)

    def received_messages(self):
        # (python-socketio's reads the shared channel alone; the rooms' come here too)
        confirmed, published = self.pubsub_commands.subscribed, self.pubsub_commands.message
        for message in self.listen_with_retries():
            kind = message.get("type")
            if kind == confirmed:
                self.route_confirmed(message.get("channel"))
                continue
            if kind != published:
                continue
            metrics.queue_received.pending += 1
            try:
                data = self.json.loads(message["data"])
                host, seq = data.get("pub"), data.get("seq")
            except (ValueError, AttributeError):
                continue  # not ours: python-socketio would ignore it too
            if host == self.host_id and not data.get("logged"):
                continue  # delivered here when emitted (logged ones come back in order)
            if isinstance(seq, int):
                last, _ = self._last_seq.get(host, (None, 0.0))
                if last is not None and seq <= last:
                    continue  # a publish retried after a broken connection
                if (last is not None and seq > last + 1 and host != self.host_id
                        and not self.routes_everywhere_now()):
                    # (routed, a worker hears only the publishes of the rooms it holds)
                    log.info("missed %d message(s) from worker %s (published while this worker "
                             "was not subscribed: their senders were told)", seq - last - 1, host)
                self._last_seq[host] = (seq, time.monotonic())
            if data.get("method") == TICK:
                with contextlib.suppress(TypeError, ValueError, AttributeError):
                    self.raise_position(parse_id(data.get("offset")))
                continue
            if data.get("method") == LEAVE:
                log.info("worker %s left the message queue", host)
                self.membership.forget(host)
                self._last_seq.pop(host, None)
                continue
            yield data

    def _forget_silent_publishers(self, after: float = 600.0) -> None:
        # One entry per publisher ever heard (each worker start, each CLI run): bounded.
        now = time.monotonic()
        if len(self._last_seq) > 64:
            self._last_seq = {host: last for host, last in self._last_seq.items()
                              if now - last[1] < after}
