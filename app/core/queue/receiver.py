"""The subscription: resubscribing, and dropping repeats by publisher and sequence."""

from __future__ import annotations

import contextlib
import logging
import time

from redis.exceptions import RedisError

from app.core.history import parse_id
from app.core.queue.delivery import first_delivery
from app.core.queue.membership import LEAVE
from app.core.queue.scripts import decoded

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
                top = parse_id(decoded(top))
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

    def _forget_silent_publishers(self, after: float = 600.0) -> None:
        # One entry per publisher ever heard (each worker start, each CLI run): bounded.
        now = time.monotonic()
        if len(self._last_seq) > 64:
            self._last_seq = {host: last for host, last in self._last_seq.items()
                              if now - last[1] < after}
