"""/admin-ui: the feed of the official Socket.IO Admin UI (served at /admin-ui/).

The Admin UI (@socket.io/admin-ui, vendored in app/web/admin_ui/) signs in with a
username and password: those of the template's own users (the login of
/api/auth/token, its limits included), and only a user with role "admin" gets in. The
answer's `session` event hands the UI an access token, which it sends back as
`sessionId` when the page is reloaded: verified as any token, and the socket ends when
it expires, as every socket does.

What it shows comes from every worker and instance: while a worker has Admin UI
sockets, every ADMIN_UI_INTERVAL seconds it asks all workers over the control bus
(app/core/control.py) for their sockets and figures, and sends its own Admin UI
sockets `server_stats` (one per worker) and `all_sockets` (all of them). Asked, a
worker knows someone watches (`AdminFeed`) for three intervals: until then it also
publishes its sockets' connects, disconnects and room changes as they happen (the UI's
Events page), to every worker's Admin UI sockets. Nothing is sent while nobody watches,
and events sent or received are never reported (python-socketio's `instrument()`
publishes one per connect, room change and delivered message at all times, and
patches library internals to do it).

Read-only unless ADMIN_UI_READ_ONLY=false: then the UI may disconnect sockets, on any
worker. Its other actions (emit, join, leave) are not offered.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import time
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar
from urllib.parse import parse_qs

from pydantic import StringConstraints

from app.api.auth import sign_in
from app.core.errors import AuthError, ForbiddenError, ValidationError
from app.core.limits import client_address
from app.core.schema import Payload
from app.core.tokens import ADMIN_UI_SESSION, Identity
from app.sockets.base import BaseNamespace, EventContext, on_event

log = logging.getLogger("app.sockets.admin_ui")

ADMIN_UI_NAMESPACE = "/admin-ui"
# Sockets each worker reports at most (the UI lists them one by one).
MAX_SOCKETS_PER_WORKER = 1000
# Live events queued for publishing at most (a connect storm while one watches).
MAX_PENDING_EVENTS = 1000
# Request headers the UI may show (never Authorization or Cookie).
SHOWN_HEADERS = ("host", "origin", "user-agent", "x-forwarded-for")
HOSTNAME = socket.gethostname()
STARTED = time.time()


class Disconnect(Payload):
    """The UI's `_disconnect` (namespace, close, filter): filter is a sid or a room."""

    namespace: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    close: bool = False
    filter: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class AdminUiNamespace(BaseNamespace):
    path = ADMIN_UI_NAMESPACE
    required_role = "admin"
    # its session token works here alone (not on /admin, /chat or REST)
    token_kind = ADMIN_UI_SESSION
    error_codes: ClassVar[dict[str, str]] = {
        "forbidden": "_disconnect while the Admin UI is read-only (ADMIN_UI_READ_ONLY)"}
    # the UI sends positional arguments: named here for validation
    POSITIONAL = {"_disconnect": ("namespace", "close", "filter")}

    def __init__(self, services) -> None:
        super().__init__(services)
        self.feeding = False
        # jti -> the token a sign-in issued, until its socket is told it (`session`)
        self._signed_in: dict[str, str] = {}

    def authenticate(self, environ: dict, auth: Any) -> Identity:
        """The UI's {username, password} (a sign-in), or {sessionId} (an earlier
        sign-in's token)."""
        auth = auth if isinstance(auth, dict) else {}
        if auth.get("sessionId"):
            return super().authenticate(environ, {"token": auth["sessionId"]})
        username, password = auth.get("username"), auth.get("password")
        if not (isinstance(username, str) and isinstance(password, str) and username and password):
            raise AuthError("sign in with an admin's username and password",
                            code="invalid_credentials")
        services = self.services
        user = sign_in(services, username[:128], password[:1024],
                       client_address(environ, self.settings.proxy_hops))
        token = services.tokens.issue(user.id, user.name, user.role, kind=ADMIN_UI_SESSION)
        identity = super().authenticate(environ, {"token": token})
        if len(self._signed_in) > 64:  # (sign-ins refused after this point leave theirs)
            self._signed_in.clear()
        self._signed_in[identity.jti] = token
        return identity

    def on_connected(self, sid: str, identity: Identity) -> None:
        self.server.start_background_task(self._welcome, sid, self._signed_in.pop(identity.jti, None))

    def _welcome(self, sid: str, token: str | None) -> None:
        """Once the socket's CONNECT is out (the UI listens from then on): its session,
        the features offered, the first snapshot; and the feed, if not running."""
        manager, deadline = self.server.manager, time.monotonic() + 10.0
        while manager.is_pre_connected(sid, self.path) and time.monotonic() < deadline:
            self.server.sleep(0.01)
        if sid not in self.identities:
            return
        if token is not None:
            self.emit("session", token, to=sid, ignore_queue=True)
        features = [] if self.settings.admin_ui_read_only else ["DISCONNECT", "MDISCONNECT"]
        self.emit("config", {"supportedFeatures": features}, to=sid, ignore_queue=True)
        if not self.feeding:
            self.feeding = True
            self.server.start_background_task(self._feed)
        self._send_snapshot(to=sid)

    def _feed(self) -> None:
        """While this worker has Admin UI sockets: every worker's figures and sockets (a
        failed round, Redis away say, is the next round's to make up)."""
        try:
            while self.identities:
                self.server.sleep(self.settings.admin_ui_interval)
                if self.identities:
                    self._send_snapshot()
        finally:
            self.feeding = False

    def _send_snapshot(self, to: str | None = None) -> None:
        """To this worker's Admin UI sockets (or one): every worker's answer."""
        try:
            answers = self.server.manager.control.run("admin_ui")
        except Exception as exc:
            log.info("admin UI snapshot not gathered: %s", exc)
            return
        workers = [a for a in answers if isinstance(a, dict) and "error" not in a]
        for worker in workers:
            self.emit("server_stats", worker["stats"], to=to, ignore_queue=True)
        self.emit("all_sockets", [s for w in workers for s in w["sockets"]], to=to,
                  ignore_queue=True)

    def _run(self, sid: str, event: Any, data: tuple) -> dict[str, Any]:
        names = self.POSITIONAL.get(event) if isinstance(event, str) else None
        if names is not None and data and not isinstance(data[0], dict):
            if len(data) > len(names):
                raise ValidationError(f"{event} takes {', '.join(names)}")
            data = (dict(zip(names, data, strict=False)),)
        return super()._run(sid, event, data)

    @on_event("_disconnect", schema=Disconnect)
    def disconnect_sockets(self, ctx: EventContext, payload: dict) -> dict:
        if self.settings.admin_ui_read_only:
            raise ForbiddenError("the Admin UI is read-only (ADMIN_UI_READ_ONLY)")
        answers = self.server.manager.control.run("admin_ui_disconnect", payload)
        return {"sockets": sum(a.get("sockets", 0) for a in answers if isinstance(a, dict))}


class AdminFeed:
    """Whether an Admin UI watches (a worker's feed asked this one lately), and the live
    events it is sent meanwhile: queued (at most MAX_PENDING_EVENTS: a connect storm
    drops the excess, which the next snapshot shows) and published in order by one task,
    so that a connect never waits for them, nor fails with them."""

    def __init__(self, sio, interval: float) -> None:
        self.sio = sio
        self.interval = interval
        self.until = 0.0  # (monotonic) watched until then
        self.pending: collections.deque = collections.deque(maxlen=MAX_PENDING_EVENTS)
        self.publishing = False

    def asked(self) -> None:
        self.until = time.monotonic() + 3 * self.interval

    def watched(self) -> bool:
        return self.until > time.monotonic()

    def socket_connected(self, namespace: str, sid: str, identity: Identity, rooms: list) -> None:
        sio = self.sio
        eio_sid = sio.manager.eio_sid_from_sid(sid, namespace)
        session = sio.eio.sockets.get(eio_sid)
        if session is not None:
            self._queue("socket_connected",
                        (_socket(sio, namespace, sid, eio_sid, session, identity, rooms), _now()))

    def socket_disconnected(self, namespace: str, sid: str, reason: Any) -> None:
        self._queue("socket_disconnected", (namespace, sid, str(reason), _now()))

    def room_changed(self, namespace: str, room: Any, sid: str, entered: bool) -> None:
        if room is not None and room != sid:
            self._queue("room_joined" if entered else "room_left", (namespace, room, sid, _now()))

    def _queue(self, event: str, data: tuple) -> None:
        self.pending.append((event, data))
        if not self.publishing:
            self.publishing = True
            self.sio.start_background_task(self._publish)

    def _publish(self) -> None:
        try:
            while self.pending:
                event, data = self.pending.popleft()
                try:
                    self.sio.emit(event, data, namespace=ADMIN_UI_NAMESPACE)
                except Exception as exc:  # the Admin UI's loss, nobody else's
                    log.debug("admin UI event %s not published: %s", event, exc)
        finally:
            self.publishing = False


def _now() -> str:
    return datetime.now(UTC).isoformat()


def local_snapshot(sio) -> dict[str, Any]:
    """This worker's figures and sockets (MAX_SOCKETS_PER_WORKER of them), as the Admin
    UI shows them: each namespace's rooms read once (python-socketio's get_rooms reads
    them all for one socket), and the worker's other clients served every so often."""
    manager, sessions = sio.manager, sio.eio.sockets
    sockets = []
    for namespace, handler in sio.namespace_handlers.items():
        identities = list(getattr(handler, "identities", {}).items())[
            :MAX_SOCKETS_PER_WORKER - len(sockets)]
        if not identities:
            continue
        rooms_of: dict[str, list] = {}
        for n, (room, members) in enumerate(list(manager.rooms.get(namespace, {}).items())):
            if room is not None:
                for sid in list(members):
                    if sid != room:
                        rooms_of.setdefault(sid, []).append(room)
            if n % 1000 == 999:
                sio.sleep(0)
        for n, (sid, identity) in enumerate(identities):
            eio_sid = manager.eio_sid_from_sid(sid, namespace)
            session = sessions.get(eio_sid)
            if session is not None:
                sockets.append(_socket(sio, namespace, sid, eio_sid, session, identity,
                                       rooms_of.get(sid, [])))
            if n % 200 == 199:
                sio.sleep(0)
    return {
        "stats": {
            "serverId": getattr(manager, "host_id", "local"),
            "hostname": HOSTNAME,
            "pid": os.getpid(),
            "uptime": time.time() - STARTED,
            "clientsCount": len(sessions),
            "pollingClientsCount": sum(1 for s in list(sessions.values()) if not s.upgraded),
            "aggregatedEvents": [],
            "namespaces": [{"name": namespace, "socketsCount": len(getattr(handler, "identities", ()))}
                           for namespace, handler in sorted(sio.namespace_handlers.items())],
        },
        "sockets": sockets,
    }


def _socket(sio, namespace: str, sid: str, eio_sid: str, session, identity: Identity,
            rooms: list) -> dict:
    environ = sio.environ.get(eio_sid, {})
    query = {key: values[0] for key, values in
             parse_qs(environ.get("QUERY_STRING", "")).items() if key != "token"}
    return {
        "id": sid,
        "clientId": eio_sid,
        "transport": "websocket" if session.upgraded else "polling",
        "nsp": namespace,
        "data": {"user": identity.id, "name": identity.name, "role": identity.role},
        "handshake": {
            "address": environ.get("REMOTE_ADDR", ""),
            "headers": {name: environ[key] for name in SHOWN_HEADERS
                        if (key := "HTTP_" + name.upper().replace("-", "_")) in environ},
            "query": query,
            "secure": environ.get("wsgi.url_scheme") == "https",
            "url": environ.get("PATH_INFO", ""),
            "issued": 0,
            "time": "",
        },
        "rooms": rooms,
    }


def local_disconnect(sio, payload: dict) -> int:
    """Disconnect this worker's sockets of `payload`'s namespace matching its filter (a
    sid, or a room); with `close`, their whole connection (every namespace)."""
    namespace, target = str(payload["namespace"]), str(payload["filter"])
    members = list(sio.manager.get_participants(namespace, target)) \
        if namespace in sio.manager.rooms else []
    for sid, eio_sid in members:
        if not payload.get("close"):
            sio.disconnect(sid, namespace=namespace, ignore_queue=True)
            continue
        # every namespace told (a client reconnects after a cut connection, not after
        # DISCONNECT), then the connection closed
        for other in list(sio.namespace_handlers):
            other_sid = sio.manager.sid_from_eio_sid(eio_sid, other)
            if other_sid is not None:
                sio.disconnect(other_sid, namespace=other, ignore_queue=True)
        session = sio.eio.sockets.get(eio_sid)
        if session is not None:
            session.close(wait=False)  # (not waiting on a client that may not read)
    return len(members)
