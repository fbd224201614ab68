"""The message queue: python-socketio client managers chosen by MESSAGE_QUEUE_URL.

- empty URL: `LocalManager`, in memory, one process;
- redis://, rediss://, unix://, redis+sentinel://: `RedisQueueManager`, which every
  worker (and any external emitter) shares.

`RedisQueueManager` changes two behaviours of python-socketio's RedisManager:
publishers wait for a pooled connection instead of failing at redis-py's pool cap,
and a publish that still fails after PUBLISH_ATTEMPTS raises QueueUnavailable
(reported to the caller) instead of being logged and dropped.
"""

from __future__ import annotations

import contextlib
import logging
import time
from urllib.parse import urlparse

import redis
import redis.sentinel
import socketio
from redis.exceptions import RedisError
from socketio.redis_manager import parse_redis_sentinel_url

from app.core.control import LocalControlBus, RedisControlBus
from app.core.errors import QueueUnavailable
from config.settings import Settings

log = logging.getLogger(__name__)

# After any sign of a queue outage, publishes must reach as many workers as before it
# for this long, or the sender is told (workers resubscribe at different moments).
RECOVERY_WINDOW = 10.0
# Longest pause between two resubscribe attempts (python-socketio's grows to 60 s).
MAX_RESUBSCRIBE_DELAY = 2.0


class LocalManager(socketio.Manager):
    """In-memory manager: every client is in this process."""

    def __init__(self) -> None:
        super().__init__()
        self.control = LocalControlBus()

    def check(self) -> str | None:
        """None when the queue is usable, else the reason (always usable here)."""
        return None


class RedisQueueManager(socketio.RedisManager):
    def __init__(self, settings: Settings, *, write_only: bool = False,
                 logger: logging.Logger | None = None) -> None:
        super().__init__(url=settings.message_queue_url, channel=settings.message_queue_channel,
                         write_only=write_only, logger=logger)
        self._settings = settings
        self._expected_receivers = 0
        self._recovering_until = 0.0
        self.control = RedisControlBus(self.publisher, settings.message_queue_channel + ":control",
                                       timeout=settings.gather_timeout)

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
        options: dict = {"socket_keepalive": True, "health_check_interval": 30,
                         "socket_connect_timeout": s.redis_socket_timeout}
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

    def _redis_connect(self) -> None:
        # Called by the listener on every (re)subscribe: a fresh subscription,
        # while the publisher's pool stays (it reconnects by itself).
        if self.pubsub is not None:
            with contextlib.suppress(RedisError):
                self.pubsub.close()
        self.publisher()
        self.pubsub = self.subscriber().pubsub(ignore_subscribe_messages=True)
        self.connected = True

    # --- lifecycle --------------------------------------------------------
    def initialize(self) -> None:
        super().initialize()  # starts python-socketio's listener
        if not self.write_only:
            self.control.start(self.server.start_background_task, self.subscriber)

    def listeners(self) -> int:
        """How many workers are subscribed to the channel right now."""
        return int(self.publisher().pubsub_numsub(self.channel)[0][1])

    def check(self) -> str | None:
        try:
            self.publisher().ping()
        except RedisError as exc:
            return f"message queue unreachable: {exc.__class__.__name__}: {exc}"
        return None

    def _redis_listen_with_retries(self):
        # python-socketio's loop, with the pause capped at MAX_RESUBSCRIBE_DELAY (so
        # emits resume seconds after Redis is back) and the outage recorded.
        retry_sleep = 0.5
        subscribed = False
        while True:
            try:
                if not subscribed:
                    self._redis_connect()
                    self.pubsub.subscribe(self.channel)
                    subscribed = True
                    retry_sleep = 0.5
                yield from self.pubsub.listen()
            except Exception as exc:
                self._note_trouble()
                log.warning("message queue subscription lost (%s): resubscribing in %.1fs",
                            exc, retry_sleep)
                subscribed = False
                time.sleep(retry_sleep)
                retry_sleep = min(retry_sleep * 2, MAX_RESUBSCRIBE_DELAY)

    # --- publishing -------------------------------------------------------
    def _publish(self, data):
        payload = self.json.dumps(data)
        attempts = self._settings.publish_attempts
        for attempt in range(1, attempts + 1):
            try:
                receivers = self.publisher().publish(self.channel, payload)
            except RedisError as exc:
                self._note_trouble()
                log.warning("publish to the message queue failed (attempt %d/%d): %s",
                            attempt, attempts, exc)
                if attempt < attempts:
                    time.sleep(0.1 * 2 ** (attempt - 1))
                continue
            self._check_receivers(receivers)
            return receivers
        raise QueueUnavailable("the message queue is unavailable: the message may not have "
                               "reached clients on other workers")

    def _note_trouble(self) -> None:
        self._recovering_until = time.monotonic() + RECOVERY_WINDOW

    def _check_receivers(self, receivers: int) -> None:
        """Report a publish that fewer workers heard than before an outage.

        PUBLISH answers how many subscribers got the message. Right after Redis comes
        back, some workers have not resubscribed yet: their clients would miss the
        message without anyone knowing, so the sender is told instead.
        """
        if time.monotonic() < self._recovering_until:
            if receivers < self._expected_receivers:
                raise QueueUnavailable(
                    f"the message queue is recovering: {receivers} of "
                    f"{self._expected_receivers} workers received the message")
            self._recovering_until = 0.0
        self._expected_receivers = receivers


def create_manager(settings: Settings, *, write_only: bool = False):
    if not settings.uses_redis:
        if write_only:
            raise RuntimeError("an external emitter needs MESSAGE_QUEUE_URL: with the "
                               "in-memory manager only the server process reaches clients")
        return LocalManager()
    return RedisQueueManager(settings, write_only=write_only)
