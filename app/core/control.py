"""Commands that must run on every worker: kick a user, list rooms, gather stats.

python-socketio's `rooms()` and `get_participants()` only see the local worker's
clients, so anything global is asked of every worker and the answers are merged.
With Redis, a command is PUBLISHed on a control channel: PUBLISH returns how many
workers received it, each worker RPUSHes its answer to a reply list, and the caller
BLPOPs exactly that many answers (or stops at the timeout and says so).

Anyone who can PUBLISH to Redis could otherwise kick users or make every worker write
to keys of their choice: commands are signed (HMAC-SHA256 with CONTROL_KEY, by default
derived from SECRET_KEY), carry their time (a replay window of MAX_AGE seconds), and
may only name a reply key under the bus's own prefix. Anything else is refused and
logged, never run.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from app.core.errors import QueueUnavailable
from app.core.lifecycle import supervised
from app.core.outage import Outage
from app.core.queue.pubsub import CLASSIC, PubSubCommands

log = logging.getLogger(__name__)

Handler = Callable[[dict], Any]
# Seconds a signed command stays valid (clocks of instances may differ a little).
MAX_AGE = 30.0


def control_key(settings) -> bytes:
    """CONTROL_KEY, or one derived from SECRET_KEY (shared by every instance anyway)."""
    if settings.control_key:
        return settings.control_key.encode()
    return hmac.new(settings.secret_key.encode(), b"control-bus", hashlib.sha256).digest()


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
    def __init__(self, client: Callable[[], Any], channel: str, timeout: float,
                 key: bytes, pubsub: PubSubCommands = CLASSIC,
                 moved: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self._client = client
        self.pubsub_commands = pubsub  # (sharded on a Redis Cluster)
        self._moved = moved  # told when Redis ends the subscription (the slot moved)
        self.channel = channel
        self.timeout = timeout
        self._key = key
        self.reply_prefix = f"{channel}:reply:"
        self.subscribed = threading.Event()
        self._stopped = False  # (stop(): tests; a worker's listener lasts its life)
        self.outage = Outage("control channel")
        # reply keys of the commands run here in the last MAX_AGE seconds: each key is
        # new per command, so a signed command replayed within its window is refused
        self._seen: dict[str, float] = {}

    def run(self, command: str, payload: dict | None = None) -> list[Any]:
        reply_key = self.reply_prefix + uuid.uuid4().hex
        message = self.sign({"command": command, "payload": payload or {}, "reply_to": reply_key,
                             "ts": time.time()})
        try:
            redis = self._client()
            receivers = self.pubsub_commands.publish(redis, self.channel, message)
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
        spawn(supervised, time.sleep, self._listen, subscriber)
        if not self.subscribed.wait(wait):
            log.warning("control channel not subscribed after %.1fs: retrying in background", wait)

    def stop(self) -> None:
        """End the listener at its next message or failure, without resubscribing: a
        test's bus must not outlive its Redis and retry on whatever later takes its
        port."""
        self._stopped = True

    def _listen(self, subscriber: Callable[[], Any]) -> None:
        retry = 0.5
        while not self._stopped:
            pubsub = None
            try:
                pubsub = subscriber().pubsub(ignore_subscribe_messages=False)
                self.pubsub_commands.subscribe(pubsub, self.channel)
                self.subscribed.set()
                self.outage.restored()
                retry = 0.5
                for message in pubsub.listen():
                    if self._stopped:
                        return
                    if self.pubsub_commands.ended(message, self.channel):
                        self._moved()
                        raise RedisError("unsubscribed by Redis from the control channel")
                    if message.get("type") == self.pubsub_commands.message:
                        try:
                            self._answer(message["data"])
                        except Exception:  # one bad command must not end the listener
                            log.exception("control message failed")
            except RedisError as exc:
                self.outage.failed(exc)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(RedisError):
                        pubsub.close()
            if self._stopped:
                return
            time.sleep(retry)
            retry = min(retry * 2, 2.0)

    def sign(self, request: dict) -> str:
        body = json.dumps(request)
        return json.dumps({"body": body, "sig": self._signature(body)})

    def _signature(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def verify(self, raw: bytes | str) -> dict:
        """The command in a signed message; ValueError says why it is refused."""
        try:
            envelope = json.loads(raw)
            body, signature = envelope["body"], envelope["sig"]
        except (ValueError, KeyError, TypeError):
            raise ValueError("not a signed command") from None
        if not isinstance(body, str) or not isinstance(signature, str) or \
                not hmac.compare_digest(self._signature(body), signature):
            raise ValueError("bad signature")
        request = json.loads(body)
        if not isinstance(request, dict) or not isinstance(request.get("payload"), dict):
            raise ValueError("malformed command")
        if abs(time.time() - float(request.get("ts", 0))) > MAX_AGE:
            raise ValueError("expired (a replay?)")
        reply_to = request.get("reply_to")
        if not isinstance(reply_to, str) or not reply_to.startswith(self.reply_prefix) or \
                len(reply_to) > len(self.reply_prefix) + 64:
            raise ValueError("reply key outside the bus's prefix")
        if request.get("command") not in self._handlers:
            raise ValueError(f"unknown command {str(request.get('command'))[:40]!r}")
        now = time.monotonic()
        while self._seen:  # oldest first (insertion order): past the window, forgotten
            oldest = next(iter(self._seen))
            if now - self._seen[oldest] < 2 * MAX_AGE:
                break
            del self._seen[oldest]
        if reply_to in self._seen:
            raise ValueError("already run (a replay)")
        self._seen[reply_to] = now
        return request

    def _answer(self, raw: bytes) -> None:
        try:
            request = self.verify(raw)
        except ValueError as exc:
            log.warning("refused a control message: %s", exc)
            return
        command, payload, reply_to = request["command"], request["payload"], request["reply_to"]
        try:
            answer = json.dumps(self._execute(command, payload))
        except (TypeError, ValueError) as exc:  # a handler's answer JSON cannot carry
            log.error("control command %s: its answer is not JSON (%s)", command, exc)
            answer = json.dumps({"error": f"the answer of {command!r} is not JSON: {exc}"})
        try:
            redis = self._client()
            redis.rpush(reply_to, answer)
            redis.expire(reply_to, max(int(self.timeout) + 5, 10))
        except RedisError as exc:
            log.warning("could not answer control command %s: %s", command, exc)
