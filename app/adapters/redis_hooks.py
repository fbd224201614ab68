"""What the template reads from redis-py beyond its API: which errors came before
any command was written, which redis-py says only in their messages."""

from __future__ import annotations

import threading
import types

import redis
from redis.retry import Retry

_failures = threading.local()


def nothing_sent(exc: Exception) -> bool:
    """Did `exc` happen before any command was written? A connection that could not
    be made, or none free in the pool."""
    text = str(exc)
    return ("connecting to" in text or "No connection available" in text
            or "Too many connections" in text or getattr(exc, "nothing_sent", False)
            or isinstance(exc, redis.sentinel.MasterNotFoundError))


class NotingRetry(Retry):
    """redis-py's retry, noting for the current thread (greenlet) whether a failure it
    retried may have come after commands were written: its immediate reconnect would
    otherwise hide a broken pipeline behind the refused connection that follows."""

    def call_with_retry(self, do, fail, *args, **kwargs):
        def noted(error, *count):
            if not nothing_sent(error):
                _failures.maybe_sent = True
            return fail(error, *count)

        return super().call_with_retry(do, noted, *args, **kwargs)


def start_noting() -> None:
    """From now on, in this thread, note retried failures that may have sent."""
    _failures.maybe_sent = False


def maybe_sent() -> bool:
    """Whether a failure retried since `start_noting` may have come after a write."""
    return getattr(_failures, "maybe_sent", False)


def resubscribe_only_by_hand(pubsub) -> None:
    """redis-py subscribes a PubSub's channels again whenever its connection comes
    back (its `on_connect` callback, run by any read or command after a break, even
    one of another green thread's route subscribe): the listener would not know of the
    break, and not catch up what it missed. Such a reconnect fails instead, and the
    listener subscribes again itself."""
    pubsub.on_connect = types.MethodType(_refuse_resubscribe, pubsub)


class ResubscribeRefused(redis.ConnectionError):
    """A subscription's connection came back: its listener subscribes again itself."""


def _refuse_resubscribe(pubsub, connection) -> None:
    # (closed again: left open, unsubscribed, the listener's next read would wait on it
    # for good, whichever green thread's command reconnected it)
    connection.disconnect()
    raise ResubscribeRefused("the subscription's connection broke: subscribed again by its "
                             "listener only")

