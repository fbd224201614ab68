"""The python-socketio server built from settings, and the WSGI stack around it."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
from urllib.parse import parse_qs

import socketio

from app.adapters import eventlet_hooks, gunicorn_hooks
from app.adapters.socketio_hooks import ServerHooks
from app.core.errors import AppError
from app.core.lifecycle import Deadlines, Lifecycle, supervised, sweep_paced
from app.core.limits import ConnectionLimit, SharedCounts, client_address
from app.core.metrics import SLOW_CONSUMER_DISCONNECTS, UNCONNECTED_EVENTS, deliveries
from app.core.queue import MEMBER_TTL, create_manager, deferred_acks
from app.core.recovery import Recovery, Sessions
from app.transport import backlog, engine_server_class, may_back_up
from config.settings import Settings

SOCKETIO_PATH = "/socket.io/"
DRAINING = AppError("this server is shutting down: connect again", code="shutting_down",
                    status=503)
# python-socketio logs every emit and received event at INFO: the template's own
# lines go to app.sockets, and the library's logger is kept to warnings and errors.
library_log = logging.getLogger("app.socketio")
library_log.setLevel(logging.WARNING)
log = logging.getLogger("app.sockets")


class _Connecting:
    """A client's namespace connect in progress: the packets for that namespace, held
    until its CONNECT is sent."""

    __slots__ = ("attachments_held", "held", "namespace")

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.held: list = []
        self.attachments_held = False

    def holds(self, data) -> bool:
        """Whether an event python-socketio's emit encoded (`2/chat,[...]`, `51-/chat,[...]`,
        then its attachments as bytes) is for this namespace."""
        if not isinstance(data, str):  # an attachment: where its event went
            return self.attachments_held
        rest = data[1:].lstrip("0123456789-")  # type, attachment count, ack id
        namespace = rest[:rest.find(",")] if rest.startswith("/") else "/"
        self.attachments_held = namespace == self.namespace
        return self.attachments_held


class RealtimeServer(ServerHooks):
    """python-socketio's server, refusing Engine.IO connections over the per-address
    limit, and sending a draining worker's new clients elsewhere."""

    def __init__(self, *args, settings: Settings, lifecycle: Lifecycle, **kwargs) -> None:
        # (before super().__init__, which asks for it)
        self.engineio_class = engine_server_class(settings)
        super().__init__(*args, **kwargs)
        self.proxy_hops = settings.proxy_hops
        # with Redis, counted across workers and instances (app/core/limits.py)
        shared = None
        if hasattr(self.manager, "membership"):
            manager = self.manager
            shared = SharedCounts(manager.publisher, manager.channel + ":conns", manager.host_id,
                                  manager.members_key, MEMBER_TTL)
            manager.heartbeat_hooks.append(lambda alive: shared.refresh())
            # admits and releases in batches, a round trip each
            shared.create_event, shared.spawn = self.eio.create_event, self._spawn_supervised
        self.address_limit = ConnectionLimit(settings.max_connections_per_address, "address",
                                             shared)
        self.user_limit = ConnectionLimit(settings.max_connections_per_user, "user", shared)
        self.lifecycle = lifecycle
        # per-socket checks when they fall due (token expiry: app/sockets/base.py)
        self.deadlines = Deadlines(self.start_background_task, self.sleep)
        # connection-state recovery (app/core/recovery.py)
        manager = self.manager
        sessions = Sessions(getattr(manager, "publisher", None), settings.message_queue_channel,
                            getattr(manager, "host_id", "local"),
                            settings.recovery_window_seconds)
        self.recovery = manager.recovery = Recovery(self, manager.logs, sessions,
                                                    settings.recovery_max_entries,
                                                    settings.recovery_max_bytes)
        if hasattr(manager, "heartbeat_hooks"):
            manager.heartbeat_hooks.append(lambda alive: sessions.refresh())
            # records written behind the connect, a batch per round trip
            sessions.create_event, sessions.spawn = self.eio.create_event, self._spawn_supervised
        # Under python-engineio's own transport (ENGINEIO_TRANSPORT=stock), an ended
        # session's WebSocket could stay open: while its writer waits on a client that
        # does not read (a slow consumer kept its connection and queue), and on gevent
        # after a ping timeout (simple-websocket keeps reading a silent client). The
        # server cuts those, as the template's transport does by itself.
        # {eio sid: TCP socket}
        self.stock_websockets: dict[str, socket.socket] | None = (
            {} if settings.engineio_transport == "stock" else None)
        # eio_sid -> its namespace connect in progress (see on_connect_packet)
        self._connecting: dict[str, _Connecting] = {}
        # connections already logged for an event outside their namespaces
        self._told_unconnected: set[str] = set()

    def _spawn_supervised(self, loop) -> None:
        """A background loop(sleep) for the worker's life (restarted if it fails)."""
        self.start_background_task(supervised, self.sleep, loop, self.sleep)

    def engineio_server_class(self):
        return self.engineio_class  # app/transport: the Engine.IO transport layer

    # A draining worker refuses at the Engine.IO level (handshake refused, or the
    # connection cut), never with a namespace refusal: socket.io clients retry the
    # former, through the proxy, to a live worker, and give up for good on the latter.
    def on_eio_connect(self, eio_sid, environ):
        if self.lifecycle.draining:
            return DRAINING.to_dict()
        refusal = self.address_limit.admit(eio_sid, client_address(environ, self.proxy_hops))
        if refusal is not None:
            log.info("connection refused code=%s reason=%s", refusal.code, refusal.message)
            return refusal.to_dict()  # Engine.IO answers 401 with this JSON
        sock = gunicorn_hooks.connection_socket(environ)
        if self.stock_websockets is not None and sock is not None \
                and environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            self.stock_websockets[eio_sid] = sock
        return super().on_eio_connect(eio_sid, environ)

    def stock_upgrade(self, environ, sock) -> None:
        """A polling session upgrading to this WebSocket (stock transport): see
        `stock_websockets`."""
        sid = parse_qs(environ.get("QUERY_STRING", "")).get("sid", [""])[0]
        if sid in self.eio.sockets:
            self.stock_websockets[sid] = sock

    def on_connect_packet(self, eio_sid, namespace, data):
        if self.lifecycle.draining:
            self.end_session(eio_sid)
            return None
        namespace = namespace or "/"
        if not (namespace in self.namespace_handlers or namespace in self.handlers
                or self.namespaces == "*" or namespace in self.namespaces):
            # socket.io-protocol v5 (test suite): `44/nsp,{"message":"Invalid namespace"}`;
            # python-socketio sent the string "Unable to connect", which socket.io-client
            # reads as an error without a message
            return self.send_socketio_packet(eio_sid, self.packet_class(
                socketio.packet.CONNECT_ERROR, data={"message": "Invalid namespace"},
                namespace=namespace))
        # The server MUST answer a CONNECT with CONNECT (socket.io-protocol v5,
        # "Connection to a namespace"): python-socketio sends it after the connect
        # handler, so what the handler (or anyone, to the rooms it joined) emitted to
        # the socket went out first. Those packets wait here for the CONNECT, and are
        # dropped with a refusal: the socket never existed. (One connect at a time per
        # client: its packets are handled in order.)
        self._connecting[eio_sid] = _Connecting(namespace)
        # connection-state recovery (app/core/recovery.py): the record the client names
        # is claimed, and its sid given back; its replay goes after the CONNECT
        state = self.recovery.begin(namespace, data)
        if state is not None and state.record is not None:
            self.manager.preset_sid = state.record["sid"]
        try:
            if eio_sid not in self.environ:  # the session ended while the claim waited
                return None
            return super().on_connect_packet(eio_sid, namespace, data)
        finally:
            self._connecting.pop(eio_sid, None)  # no CONNECT: what waited is dropped
            if state is not None:
                self.manager.preset_sid = None
                self.recovery.end(state, eio_sid)

    def send_socketio_packet(self, eio_sid, pkt):
        # The CONNECT of a socket with recovery carries its private session id.
        if pkt.packet_type == socketio.packet.CONNECT and isinstance(pkt.data, dict):
            state = self.recovery.current
            if state is not None and state.pid is not None:
                pkt.data = {**pkt.data, "pid": state.pid}
        connecting = self._connecting.get(eio_sid) if self._connecting else None
        if connecting is not None and (pkt.namespace or "/") == connecting.namespace:
            if pkt.packet_type not in (socketio.packet.CONNECT, socketio.packet.CONNECT_ERROR):
                connecting.held.append((self.send_socketio_packet, pkt))
                return
            del self._connecting[eio_sid]
            super().send_socketio_packet(eio_sid, pkt)
            if pkt.packet_type == socketio.packet.CONNECT:
                for send, held in connecting.held:
                    send(eio_sid, held)
            return
        super().send_socketio_packet(eio_sid, pkt)

    def disconnect(self, sid, namespace=None, ignore_queue=False):
        # A server's disconnect (kick, ban, expiry) is final: the socket's recovery
        # record goes too (python-socketio's path here never calls on_disconnect_packet).
        namespace = namespace or "/"
        if self.manager.eio_sid_from_sid(sid, namespace) is not None:
            self.recovery.disconnected(sid, self.reason.SERVER_DISCONNECT)
        return super().disconnect(sid, namespace=namespace, ignore_queue=ignore_queue)

    def on_disconnect_packet(self, eio_sid, namespace, reason=None):
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace or "/")
        if sid is not None:
            self.recovery.disconnected(sid, reason)
        return super().on_disconnect_packet(eio_sid, namespace, reason)

    def send_engineio_packet(self, eio_sid, eio_pkt):
        connecting = self._connecting.get(eio_sid) if self._connecting else None
        if connecting is not None and connecting.holds(eio_pkt.data):
            connecting.held.append((self.send_engineio_packet, eio_pkt))
            return
        # python-socketio's emit hands each local recipient its event here (and only
        # emits do: acks and connects take send_socketio_packet): counted for /metrics.
        deliveries.pending += 1
        self.eio.send_packet(eio_sid, eio_pkt)  # (python-socketio's step is this call)

    def run_event_handler(self, server, sid, eio_sid, data, namespace, id):
        # python-socketio's, with the ack sent once the handler's publishes are done
        # (app/core/queue, `deferred_acks`): handlers of one client still run in
        # order, and their publishes leave in that order.
        with deferred_acks() as pending:
            result = server.trigger_handler(data[0], namespace, sid, *data[1:])
        if result == self.not_handled or (id is None and not pending):
            return
        if not pending:
            return self._send_ack(eio_sid, namespace, id, result)
        self.lifecycle.begin()  # a draining worker waits for these acks too
        self.start_background_task(self._ack_when_published, pending, eio_sid, namespace, id,
                                   result)

    def _ack_when_published(self, pending, eio_sid, namespace, id, result) -> None:
        try:
            for item in pending:
                item.event.wait()
            error = next((item.error for item in pending if item.error is not None), None)
            if error is not None and isinstance(result, dict) and result.get("ok"):
                result = {"ok": False, "error": error.to_dict()}
            if id is not None:
                self._send_ack(eio_sid, namespace, id, result)
        finally:
            self.lifecycle.end()

    def _send_ack(self, eio_sid, namespace, id, result) -> None:
        data = [] if result is None else list(result) if isinstance(result, tuple) else [result]
        self.send_socketio_packet(eio_sid, self.packet_class(
            socketio.packet.ACK, namespace=namespace, id=id, data=data))

    def on_eio_disconnect(self, eio_sid, reason=None):
        self.address_limit.release(eio_sid)
        self._told_unconnected.discard(eio_sid)
        if self.stock_websockets is not None:
            sock = self.stock_websockets.pop(eio_sid, None)
            if sock is not None and reason == self.eio.reason.PING_TIMEOUT:
                _cut(sock)
        return super().on_eio_disconnect(eio_sid, reason)

    # A client that sends what the protocol does not allow is disconnected with one
    # log line, instead of a traceback per packet (python-socketio raises on them).
    def on_eio_message(self, eio_sid, data):
        try:
            return super().on_eio_message(eio_sid, data)
        except Exception as exc:  # malformed packet: any parse error of hostile input
            self._drop_malformed(eio_sid, exc)

    def on_event_packet(self, eio_sid, namespace, id, data):
        if not (isinstance(data, list) and data and isinstance(data[0], str)):
            return self._drop_malformed(eio_sid, ValueError("event without a name"))
        if data[0] in self.reserved_events:
            # python-socketio passes a client event named "connect" or "disconnect" to
            # the namespace as if it were the real one: it would re-run authentication
            # with client-made arguments, or forget the socket's identity.
            return self._drop_malformed(eio_sid, ValueError(f"reserved event {data[0]!r}"))
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace or "/")
        if sid is None or not self.manager.is_connected(sid, namespace or "/"):
            # dropped and counted; python-socketio logged a warning for each one (a
            # 100 KB polling POST of them wrote thousands of lines)
            UNCONNECTED_EVENTS.inc()
            if eio_sid not in self._told_unconnected:
                self._told_unconnected.add(eio_sid)
                log.info("events for namespace %s from %s, which has not connected to it: "
                         "dropped (realtime_unconnected_events_total counts them)",
                         namespace or "/", eio_sid)
            return None
        return super().on_event_packet(eio_sid, namespace, id, data)

    def _drop_malformed(self, eio_sid, exc: Exception) -> None:
        log.info("malformed packet from %s (%s): disconnecting", eio_sid, exc)
        self.forget_partial_packet(eio_sid)
        self.end_session(eio_sid, broken=True)

    def cut_for_recovery(self, eio_sid: str) -> None:
        """End a session as a lost connection would be: its client comes back and is
        recovered (app/core/recovery.py), its missed events replayed."""
        session = self.eio.sockets.get(eio_sid)
        if session is not None:
            session.close(wait=False, abort=True, reason=self.eio.reason.TRANSPORT_CLOSE)

    def end_session(self, eio_sid: str, broken: bool = False) -> None:
        """End an Engine.IO session now, without a protocol close. `broken`: the client
        broke the protocol or a limit (its polling session is gone at once); else the
        server ends it (a drain: its next poll still gets CLOSE, app/transport/protocol.py).

        Not `eio.disconnect()`: it waits for the session's queue to drain, and the
        callers here run inside that client's own POST (polling), or for a client
        that does not read: the wait would be for a poll or a read that never comes.
        """
        sock = self.stock_websockets.pop(eio_sid, None) if self.stock_websockets else None
        session = self.eio.sockets.get(eio_sid)
        if session is not None:
            session.close(wait=False, abort=True,
                          reason=self.eio.reason.TRANSPORT_ERROR if broken else None)
        if sock is not None:
            _cut(sock)


def _cut(sock: socket.socket) -> None:
    """End a TCP connection whoever waits on it: python-engineio's writer and reader
    wake up (an error, or EOF) and end."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def watch_slow_consumers(sio: RealtimeServer, max_queued: int, interval: float = 1.0) -> None:
    """Disconnect clients that stop reading (background task, one per worker).

    Once the kernel's buffer for such a client is full, every emit to it waits in
    its backlog (app/transport/engine.py; the queue, for long-polling and under
    ENGINEIO_TRANSPORT=stock); past `max_queued` packets the session is ended and its
    connection cut, so its memory is freed.
    """
    def visit(eio_sid: str) -> None:
        session = sio.eio.sockets.get(eio_sid)
        if session is None:
            return
        try:
            queued = backlog(session)
            if not session.closed and queued > max_queued:
                log.warning("slow consumer %s: %d packets queued, disconnecting", eio_sid,
                            queued)
                SLOW_CONSUMER_DISCONNECTS.inc()
                sio.end_session(eio_sid, broken=True)
        except Exception:  # one session's failure must not spare the others
            log.exception("slow-consumer check failed for %s", eio_sid)

    sweep_paced(sio.sleep, interval, lambda: may_back_up(sio.eio), visit)


def create_socketio_server(settings: Settings, namespaces: list[str],
                           lifecycle: Lifecycle,
                           logged: dict[str, str] | None = None) -> RealtimeServer:
    # the template's transport's byte bound (app/transport/engine.py); python-engineio's
    # own has none (ENGINEIO_TRANSPORT=stock: MAX_QUEUED_PACKETS bounds a slow client)
    transport_options = ({} if settings.engineio_transport == "stock"
                         else {"max_queued_bytes": settings.max_queued_bytes,
                               "max_websockets": settings.worker_connections})
    sio = RealtimeServer(
        settings=settings,
        lifecycle=lifecycle,
        # One client's events are handled one after another, in the order sent (its
        # reader runs the handler): a sender's messages reach every worker in order,
        # and a client that sends faster than its handlers run is slowed down by TCP
        # instead of piling up green threads. (Server.call() needs the default.)
        async_handlers=False,
        async_mode=settings.async_mode,
        client_manager=create_manager(settings, logged=logged),
        # Only the registered namespaces: a connect to "/" (accepted by default)
        # or any other namespace is refused instead of accepted without a token.
        namespaces=namespaces,
        # None means same-origin only; an empty list would disable the check.
        cors_allowed_origins=list(settings.cors_allowed_origins) or None,
        transports=list(settings.transports),
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        max_http_buffer_size=settings.max_http_buffer_size,
        logger=library_log,
        engineio_logger=False,
        **transport_options,
    )
    return sio


def wrap_wsgi(sio: RealtimeServer, flask_wsgi_app, settings: Settings, lifecycle: Lifecycle):
    """One WSGI function: `/socket.io/` to python-socketio, every other path to Flask.

    It stands in for socketio.WSGIApp, and around the Socket.IO endpoint it:
    - hides the client's permessage-deflate offer (WEBSOCKET_COMPRESSION): the
      eventlet and gevent WebSocket servers accept it whenever offered;
    - tracks WebSocket requests in `lifecycle.websockets` while they last (a draining
      worker cuts them): upgrades in progress, and connections the async library's
      WebSocket server reads; the template's transport keeps its open WebSockets
      itself, with no request (app/transport: `open_websockets`);
    - answers JSON errors where python-engineio lets client mistakes escape (a POST
      to a session closed a moment ago raised KeyError: a 500 HTML page), or hangs
      (a polling POST over MAX_HTTP_BUFFER_SIZE, see `too_large`).
    Plain functions, not callable objects: every `__call__` layer stays on the stack
    of each green thread the library's WebSocket server parks, about 0.7 KB per
    connection.
    """
    handle_request = sio.handle_request
    connection_socket = gunicorn_hooks.connection_socket
    provide_websocket_socket = eventlet_hooks.provide_websocket_socket
    max_body = settings.max_http_buffer_size
    compression = settings.websocket_compression
    stock = sio.stock_websockets is not None

    def too_large(environ, start_response):
        # python-engineio would answer 400 after closing the session with wait=True,
        # which blocked this request until a poll that cannot come (a hang).
        sid = parse_qs(environ.get("QUERY_STRING", "")).get("sid", [""])[0]
        sio.end_session(sid, broken=True)
        log.info("socket.io POST over MAX_HTTP_BUFFER_SIZE: session %s closed", sid or "-")
        body = json.dumps({"code": "payload_too_large",
                           "message": f"packets are limited to {max_body} bytes"})
        start_response("413 REQUEST ENTITY TOO LARGE", [("Content-Type", "application/json"),
                                                       ("Connection", "close")])
        return [body.encode()]

    def app(environ, start_response):
        if not environ.get("PATH_INFO", "").startswith(SOCKETIO_PATH):
            return flask_wsgi_app(environ, start_response)
        if environ.get("REQUEST_METHOD") == "POST" and _content_length(environ) > max_body:
            return too_large(environ, start_response)
        if not compression:
            environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        sock = connection_socket(environ)
        if sock is not None and environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            # (inline, not in a helper around handle_request: this frame stays on the
            # connection's stack)
            provide_websocket_socket(environ, sock)
            lifecycle.websockets.add(sock)
            if stock and "sid=" in environ.get("QUERY_STRING", ""):
                sio.stock_upgrade(environ, sock)
            try:
                return handle_request(environ, start_response)
            finally:
                lifecycle.websockets.discard(sock)
        try:
            return handle_request(environ, start_response)
        except Exception as exc:
            log.info("socket.io request refused: %s: %s", exc.__class__.__name__, exc)
            body = json.dumps({"code": "invalid_session", "message": "unknown or closed session"})
            start_response("400 BAD REQUEST", [("Content-Type", "application/json")],
                           sys.exc_info())
            return [body.encode()]

    return app


def _content_length(environ) -> int:
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0
