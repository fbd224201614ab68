"""The one place every Socket.IO connect and event passes.

    connect:  token (auth payload or Authorization header) -> verified identity
              -> role check -> identity and rate limiter kept for the socket's lifetime
    event:    identity -> rate limit -> known event? -> payload schema -> handler
              -> ack {"ok": true, ...} | {"ok": false, "error": {code, message}}
              -> log line

Handlers are plain methods of validated input, declared with `@on_event`:

    class Chat(BaseNamespace):
        path = "/chat"

        @on_event("join", schema=RoomPayload)  # a pydantic model (app.core.schema.Payload)
        def join(self, ctx, payload):
            ...
            return {"room": payload["room"]}

Later layers (rate limits, token expiry, metrics) belong in `_dispatch` and
`_connect`, so every namespace, including yours, gets them without edits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar
from urllib.parse import parse_qs

import socketio
from pydantic import BaseModel, StringConstraints

from app.core.chat import user_room
from app.core.errors import AppError, AuthError, ForbiddenError, ValidationError
from app.core.limits import TokenBucket, rate_limited
from app.core.metrics import OK, NamespaceMetrics
from app.core.revocation import BANNED, REVOKED
from app.core.schema import Payload, validate
from app.core.tokens import ACCESS, Identity, bearer_token
from app.services import Services
from config.settings import Settings

log = logging.getLogger("app.sockets")

# A payload model, or a function of the settings that builds one (for limits from config).
SchemaSpec = type[Payload] | Callable[[Settings], type[Payload]] | None


@dataclass(frozen=True)
class EventContext:
    sid: str
    user: Identity


@dataclass(frozen=True)
class EventSpec:
    name: str
    handler: Callable[..., dict[str, Any] | None]
    schema: type[Payload] | None


def on_event(name: str, *, schema: SchemaSpec = None):
    """Declare a method as the handler of event `name`, with its payload schema."""

    def decorate(method):
        method.__socket_event__ = (name, schema)
        return method

    return decorate


def error_ack(error: AppError) -> dict[str, Any]:
    return {"ok": False, "error": error.to_dict()}


INTERNAL_ERROR = AppError("the server failed to handle this event", code="internal_error",
                          status=500)
SHUTTING_DOWN = AppError("this server is shutting down: reconnect and send again",
                         code="shutting_down", status=503)
TOKEN_EXPIRED = AuthError("the token has expired: send a fresh one (refresh) or reconnect",
                          code="token_expired")
# Server -> client events about the socket's token (every namespace).
TOKEN_EXPIRING_EVENT = "token_expiring"  # {expires_in, expires_at}: send `refresh` soon
SESSION_ENDED_EVENT = "session_ended"  # {code, message}: then the server disconnects
KICKED_EVENT = "kicked"  # {reason, until?}: kicked or banned by an admin, then disconnected
REFUSAL_MESSAGES = {BANNED: "this user is banned", REVOKED: "this token was revoked"}


class RefreshPayload(Payload):
    token: Annotated[str, StringConstraints(min_length=1, max_length=8192)]


REFRESH_SCHEMA = RefreshPayload
# Longest wait between two looks at a live socket's token: the entry of a socket that
# left is dropped by then, so the worker's heap holds the sockets of the last minute,
# however long tokens live (JWT_TTL_SECONDS) and however many clients came and went.
TOKEN_LOOK_MAX = 60.0
# How soon a socket still connecting is looked at again.
CONNECTING_LOOK = 0.2


class BaseNamespace(socketio.Namespace):
    path: ClassVar[str]
    # None: any authenticated user; "admin": only tokens with that role.
    required_role: ClassVar[str | None] = None
    # The kind of token a connect must carry (app/core/tokens.py)
    token_kind: ClassVar[str] = ACCESS
    # The prefix of the rooms whose broadcasts (and the namespace's own) are logged:
    # history, `since` and connection-state recovery (app/core/history.py,
    # app/core/recovery.py). None: nothing logged, no recovery.
    logged_rooms: ClassVar[str | None] = None
    # For the AsyncAPI document (/api/asyncapi.json), merged along the class hierarchy:
    # events this namespace emits ({name: pydantic model of the payload}) and the ack
    # error codes its handlers raise ({code: when}); the common ones are in
    # app/sockets/events.py.
    server_events: ClassVar[dict[str, type[BaseModel]]] = {}
    error_codes: ClassVar[dict[str, str]] = {
        "identity_mismatch": "refresh: the new token is for another user or role",
        "invalid_token": "refresh: the new token is invalid",
        "malformed_token": "refresh: the new token is not a JWT or too long",
    }

    def __init__(self, services: Services) -> None:
        super().__init__(self.path)
        self.services = services
        self.settings = services.settings
        self.events = self._collect_events(services.settings)
        self.metrics = NamespaceMetrics(self.path, self.events)
        # sid -> identity / event rate limiter of every socket connected to this
        # namespace in this worker (both dropped at disconnect).
        self.identities: dict[str, Identity] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self.warned: set[str] = set()  # sockets told their token expires soon
        self.looks: dict[str, float] = {}  # sid -> when its token is next looked at

    @classmethod
    def _collect_events(cls, settings: Settings) -> dict[str, EventSpec]:
        events = {}
        for attribute in dir(cls):
            declared = getattr(getattr(cls, attribute), "__socket_event__", None)
            if declared is None:
                continue
            name, schema = declared
            if callable(schema) and not isinstance(schema, type):
                schema = schema(settings)
            events[name] = EventSpec(name, getattr(cls, attribute), schema)
        return events

    # --- python-socketio entry point -------------------------------------
    def trigger_event(self, event, *args):
        if event == "connect":
            return self._connect(*args)
        if event == "disconnect":
            return self._disconnect(*args)
        return self._dispatch(event, args)

    # --- connect / disconnect --------------------------------------------
    def _connect(self, sid: str, environ: dict, auth: Any = None) -> None:
        try:
            identity = self.authenticate(environ, auth)
            refusal = self.server.user_limit.admit(sid, identity.id)
            if refusal is not None:
                raise refusal
            self.identities[sid] = identity
            self._watch_token(sid, 0.0)  # a ban that came during the connect, too
            self.metrics.connections.inc()  # dec in _forget: the gauge is len(identities)
            self.buckets[sid] = TokenBucket(self.settings.event_rate, self.settings.event_burst)
            self.enter_room(sid, user_room(identity.id))
            self.on_connected(sid, identity)
            # a reconnect within the recovery window: its rooms back, its missed events
            # sent after the CONNECT (app/core/recovery.py)
            rooms = self.server.recovery.restore(sid, self.path, identity.id)
            if rooms is not None:
                self.on_recovered(sid, identity, rooms)
        except AppError as exc:
            self._forget(sid)
            self.metrics.refused(exc.code)
            log.info("connect refused ns=%s code=%s reason=%s", self.path, exc.code, exc.message,
                     extra={"namespace": self.path, "outcome": exc.code})
            raise socketio.exceptions.ConnectionRefusedError(exc.message, exc.to_dict()) from None
        except Exception:
            self._forget(sid)
            self.metrics.refused(INTERNAL_ERROR.code)
            log.exception("connect handler failed ns=%s", self.path)
            raise socketio.exceptions.ConnectionRefusedError(
                INTERNAL_ERROR.message, INTERNAL_ERROR.to_dict()) from None
        log.debug("connect ns=%s sid=%s user=%s", self.path, sid, identity.id,
                  extra={"namespace": self.path, "user_id": identity.id})
        feed = getattr(self.server, "admin_feed", None)
        if feed is not None and feed.watched():
            try:  # (with its rooms: their room_joined went out before it)
                feed.socket_connected(self.path, sid, identity,
                                      [user_room(identity.id), *(rooms or ())])
            except Exception:  # the Admin UI's loss: never the connect's
                log.exception("admin UI connect event failed ns=%s", self.path)

    def authenticate(self, environ: dict, auth: Any) -> Identity:
        """The identity of a connecting client: `auth={"token": ...}`, or a Bearer header."""
        if auth is not None and not isinstance(auth, dict):
            raise ValidationError('auth must be an object: {"token": "<jwt>"}',
                                  code="malformed_token")
        token = (auth or {}).get("token")
        if token is None:
            token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
        query_token = parse_qs(environ.get("QUERY_STRING", "")).get("token")
        if query_token:
            if not self.settings.allow_query_token:
                raise AuthError("tokens in the URL are refused (they end up in logs): send "
                                'it as auth {"token": ...}', code="token_in_query")
            token = token or query_token[0]
        identity = self.services.tokens.verify(token, kind=self.token_kind)
        self.services.revocations.check(identity)  # banned user, revoked token
        if self.required_role is not None and identity.role != self.required_role:
            raise ForbiddenError(f"the {self.path} namespace requires the "
                                 f"{self.required_role!r} role")
        return identity

    def _forget(self, sid: str) -> Identity | None:
        self.server.user_limit.release(sid)
        self.buckets.pop(sid, None)
        self.warned.discard(sid)
        self.looks.pop(sid, None)
        identity = self.identities.pop(sid, None)
        if identity is not None:
            self.metrics.connections.dec()
        return identity

    def _disconnect(self, sid: str, reason: Any = None) -> None:
        identity = self._forget(sid)
        if identity is None:
            return
        feed = getattr(self.server, "admin_feed", None)
        if feed is not None and feed.watched():
            feed.socket_disconnected(self.path, sid, reason)
        try:
            self.on_disconnected(sid, identity, reason)
        except Exception:
            log.exception("disconnect hook failed ns=%s sid=%s", self.path, sid)
        log.debug("disconnect ns=%s sid=%s user=%s reason=%s", self.path, sid, identity.id, reason,
                  extra={"namespace": self.path, "user_id": identity.id})

    def on_connected(self, sid: str, identity: Identity) -> None:
        """Hook: the socket is authenticated (raise AppError to refuse it)."""

    def on_recovered(self, sid: str, identity: Identity, rooms: list[str]) -> None:
        """Hook: the socket came back within the recovery window and is in `rooms`
        again (python-socketio's rooms: rebuild what the namespace keeps about them)."""

    def on_disconnected(self, sid: str, identity: Identity, reason: Any) -> None:
        """Hook: the socket is gone; python-socketio already removed it from its rooms."""

    # --- events -----------------------------------------------------------
    def _dispatch(self, event: Any, args: tuple) -> dict[str, Any]:
        started = time.perf_counter()
        sid, data = args[0], args[1:]
        lifecycle = self.services.lifecycle
        lifecycle.begin()  # a draining worker waits for this handler before closing sockets
        try:
            if lifecycle.draining:
                raise SHUTTING_DOWN
            ack = self._run(sid, event, data)
        except AppError as exc:
            ack = error_ack(exc)
        except Exception:
            log.exception("event handler failed ns=%s event=%r sid=%s", self.path, event, sid)
            ack = error_ack(INTERNAL_ERROR)
        finally:
            lifecycle.end()
        elapsed = time.perf_counter() - started
        outcome = OK if ack["ok"] else ack["error"]["code"]
        self.metrics.event(event, outcome, elapsed)
        if log.isEnabledFor(logging.DEBUG):
            identity = self.identities.get(sid)
            log.debug("event ns=%s event=%r sid=%s outcome=%s ms=%.2f", self.path, event, sid,
                      outcome, elapsed * 1000,
                      extra={"namespace": self.path, "event": self.metrics.event_label(event),
                             "outcome": outcome, "user_id": identity and identity.id})
        return ack

    def _run(self, sid: str, event: Any, data: tuple) -> dict[str, Any]:
        identity = self.identities.get(sid)
        if identity is None:
            raise AppError("this socket is not authenticated", code="not_authenticated",
                           status=401)
        # Every event is checked against the token's current expiry and the bans and
        # revocations this worker knows (memory only: no I/O per event).
        if identity.expires_at <= time.time():
            raise TOKEN_EXPIRED
        self.services.revocations.check_local(identity)
        retry_after = self.buckets[sid].take()
        if retry_after:
            raise rate_limited(retry_after, "events")
        spec = self.events.get(event) if isinstance(event, str) else None
        if spec is None:
            raise AppError(f"unknown event {str(event)[:64]!r}", code="unknown_event",
                           details={"events": sorted(self.events)})
        if len(data) > 1:
            raise ValidationError("send one payload object (and an ack callback)")
        payload = data[0] if data else None
        if spec.schema is not None:
            payload = validate(spec.schema, payload)
        result = spec.handler(self, EventContext(sid, identity), payload)
        return {"ok": True, **(result or {})}

    # --- token lifetime (every namespace) --------------------------------
    @on_event("refresh", schema=REFRESH_SCHEMA)
    def refresh(self, ctx: EventContext, payload: dict) -> dict:
        """A fresh token for this socket: same user and role, later expiry."""
        fresh = self.services.tokens.verify(payload["token"], kind=self.token_kind)
        self.services.revocations.check(fresh)
        self.identities[ctx.sid] = ctx.user.refreshed(fresh)
        self.warned.discard(ctx.sid)
        self._watch_token(ctx.sid)  # (already booked sooner: that look re-books)
        return {"expires_at": fresh.expires_at, "expires_in": fresh.expires_at - int(time.time())}

    def _watch_token(self, sid: str, delay: float | None = None) -> None:
        """Look at this socket's token after `delay` seconds, by default when it is
        next due (its warning, then its expiry; a minute at most): `check_token`, per
        worker, for sockets that only receive and send no event to check it on.
        One look per socket is booked: an earlier one, or a new token's (`refresh`),
        re-books from the token it then finds."""
        if delay is None:
            identity = self.identities.get(sid)
            if identity is None:
                return
            left = identity.expires_at - time.time()
            warning = self.settings.token_warning_seconds
            delay = left - warning if left > warning and sid not in self.warned else left
        when = time.monotonic() + min(max(delay, 0.0), TOKEN_LOOK_MAX)
        booked = self.looks.get(sid)
        if booked is not None and booked <= when:
            return
        self.looks[sid] = when
        self.server.deadlines.at(when, self._token_due, sid, when)

    def _token_due(self, sid: str, when: float) -> None:
        if self.looks.get(sid) != when:
            return  # the socket left, or this look was replaced by an earlier one
        del self.looks[sid]
        delay = None
        try:
            identity = self.identities.get(sid)
            if identity is None:
                return
            if not self.server.manager.is_connected(sid, self.path):
                # its connect handler is waiting on Redis: a disconnect now would be a
                # no-op, so a ban that raced the connect is looked at again shortly
                delay = CONNECTING_LOOK
                return
            self.check_token(sid, identity, time.time(), self.settings.token_warning_seconds)
        finally:  # (also after an error: the next look is booked whatever happened)
            if sid in self.identities:
                self._watch_token(sid, delay)

    def check_token(self, sid: str, identity, now: float, warning: float) -> None:
        """Warn a socket whose token expires within `warning` seconds (once per token);
        end it if its token expired, or if a ban or revocation covers it."""
        left = identity.expires_at - now
        if left <= 0:
            self.end_socket(sid, TOKEN_EXPIRED.code, TOKEN_EXPIRED.message)
        elif (refusal := self.services.revocations.refusal(identity, now)) == BANNED:
            # as the kick says it (app/sockets/worker_ops.py), whichever comes first
            self.emit(KICKED_EVENT, self.services.revocations.kick_notice(identity.id), to=sid,
                      ignore_queue=True)
            self.server.disconnect(sid, namespace=self.path, ignore_queue=True)
        elif refusal is not None:
            self.end_socket(sid, refusal, REFUSAL_MESSAGES[refusal])
        elif left <= warning and sid not in self.warned:
            self.warned.add(sid)
            self.emit(TOKEN_EXPIRING_EVENT, {"expires_in": int(left),
                                             "expires_at": identity.expires_at},
                      to=sid, ignore_queue=True)

    def end_socket(self, sid: str, code: str, message: str) -> None:
        """Tell the socket why (`session_ended` {code, message}), then disconnect it."""
        self.emit(SESSION_ENDED_EVENT, {"code": code, "message": message}, to=sid,
                  ignore_queue=True)
        self.server.disconnect(sid, namespace=self.path, ignore_queue=True)

    # --- helpers for handlers --------------------------------------------
    def is_member(self, sid: str, room: str) -> bool:
        """O(1) membership test (python-socketio's rooms(sid) scans every room)."""
        return sid in self.server.manager.rooms.get(self.path, {}).get(room, ())
