"""Commands that must run on every worker: kick a user, list rooms, gather stats.

python-socketio's `rooms()` and `get_participants()` only see the local worker's
clients, so anything global is asked of every worker and the answers are merged.
With Redis, a command is PUBLISHed on a control channel: PUBLISH returns how many
workers received it, each worker RPUSHes its answer to a reply list, and the caller
BLPOPs exactly that many answers (or stops at the timeout and says so).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from app.core.errors import QueueUnavailable
from app.core.outage import Outage

log = logging.getLogger(__name__)

Handler = Callable[[dict], Any]


class ControlBus:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, command: str, handler: Handler) -> None:
        self._handlers[command] = handler

    def run(self, command: str, payload: dict | None = None) -> list[Any]:
        """Run `command` on every worker; return the answers that arrived."""
        raise NotImplementedError

    def _execute(self, command: str, payload: dict) -> Any:
        handler = self._handlers.get(command)
        if handler is None:
            return {"error": f"unknown command {command!r}"}
        try:
            return handler(payload)
        except Exception as exc:  # one worker's failure must not silence the others
            log.exception("control command %s failed", command)
            return {"error": f"{exc.__class__.__name__}: {exc}"}


class LocalControlBus(ControlBus):
    def run(self, command: str, payload: dict | None = None) -> list[Any]:
        return [self._execute(command, payload or {})]


class RedisControlBus(ControlBus):
    def __init__(self, client: Callable[[], Any], channel: str, timeout: float) -> None:
        super().__init__()
        self._client = client
        self.channel = channel
        self.timeout = timeout
        self.subscribed = threading.Event()
        self.outage = Outage("control channel")

    def run(self, command: str, payload: dict | None = None) -> list[Any]:
        reply_key = f"{self.channel}:reply:{uuid.uuid4().hex}"
        message = json.dumps({"command": command, "payload": payload or {}, "reply_to": reply_key})
        try:
            redis = self._client()
            receivers = redis.publish(self.channel, message)
            answers: list[Any] = []
            deadline = time.monotonic() + self.timeout
            while len(answers) < receivers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                item = redis.blpop([reply_key], timeout=remaining)
                if item is None:
                    break
                answers.append(json.loads(item[1]))
            redis.delete(reply_key)
        except RedisError as exc:
            raise QueueUnavailable(f"the message queue is unavailable: {exc}") from exc
        if len(answers) < receivers:
            log.warning("control command %s: %d of %d workers answered in %.1fs",
                        command, len(answers), receivers, self.timeout)
            answers.append({"error": f"{receivers - len(answers)} worker(s) did not answer"})
        return answers

    def start(self, spawn: Callable[..., Any], subscriber: Callable[[], Any],
              wait: float = 2.0) -> None:
        """Subscribe in the background; wait (bounded) so this worker is counted at once."""
        spawn(self._listen, subscriber)
        if not self.subscribed.wait(wait):
            log.warning("control channel not subscribed after %.1fs: retrying in background", wait)

    def _listen(self, subscriber: Callable[[], Any]) -> None:
        retry = 0.5
        while True:
            pubsub = None
            try:
                pubsub = subscriber().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                self.subscribed.set()
                self.outage.restored()
                retry = 0.5
                for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._answer(message["data"])
            except RedisError as exc:
                self.outage.failed(exc)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(RedisError):
                        pubsub.close()
            time.sleep(retry)
            retry = min(retry * 2, 2.0)

    def _answer(self, raw: bytes) -> None:
        try:
            request = json.loads(raw)
            command, payload, reply_to = request["command"], request["payload"], request["reply_to"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed control message")
            return
        answer = json.dumps(self._execute(command, payload))
        try:
            redis = self._client()
            redis.rpush(reply_to, answer)
            redis.expire(reply_to, max(int(self.timeout) + 5, 10))
        except RedisError as exc:
            log.warning("could not answer control command %s: %s", command, exc)
