"""The python-socketio server built from settings, and the WSGI stack around it."""

from __future__ import annotations

import logging

import socketio

from app.core.lifecycle import Lifecycle
from app.core.limits import ConnectionLimit
from app.core.queue import create_manager
from config.settings import Settings

log = logging.getLogger("app.socketio")
# python-socketio logs every emit and received event at INFO: the template's own
# per-event line is in app.sockets, so keep the library to warnings and errors.
log.setLevel(logging.WARNING)


class RealtimeServer(socketio.Server):
    """python-socketio's server, refusing Engine.IO connections over the per-address limit."""

    def __init__(self, *args, connection_limit: ConnectionLimit, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.connection_limit = connection_limit

    def _handle_eio_connect(self, eio_sid, environ):
        refusal = self.connection_limit.admit(eio_sid, environ)
        if refusal is not None:
            log.info("connection refused code=%s reason=%s", refusal.code, refusal.message)
            return refusal.to_dict()  # Engine.IO answers 401 with this JSON
        return super()._handle_eio_connect(eio_sid, environ)

    def _handle_eio_disconnect(self, eio_sid, reason=None):
        self.connection_limit.release(eio_sid)
        return super()._handle_eio_disconnect(eio_sid, reason)


def watch_slow_consumers(sio: socketio.Server, max_queued: int, interval: float = 1.0) -> None:
    """Disconnect clients that stop reading (background task, one per worker).

    Every emit to such a client waits in its Engine.IO queue; past `max_queued`
    packets the session is closed, so no more are queued and its memory is freed
    once the connection ends (at the latest after PING_INTERVAL + PING_TIMEOUT).
    """
    while True:
        sio.sleep(interval)
        for eio_sid, session in list(sio.eio.sockets.items()):
            if not session.closed and session.queue.qsize() > max_queued:
                log.warning("slow consumer %s: %d packets queued, disconnecting", eio_sid,
                            session.queue.qsize())
                session.close(wait=False, abort=True)


def create_socketio_server(settings: Settings, namespaces: list[str]) -> socketio.Server:
    return RealtimeServer(
        connection_limit=ConnectionLimit(settings.max_connections_per_address,
                                         settings.proxy_hops),
        async_mode=settings.async_mode,
        client_manager=create_manager(settings),
        # Only the registered namespaces: a connect to "/" (accepted by default)
        # or any other namespace is refused instead of accepted without a token.
        namespaces=namespaces,
        # None means same-origin only; an empty list would disable the check.
        cors_allowed_origins=list(settings.cors_allowed_origins) or None,
        transports=list(settings.transports),
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        max_http_buffer_size=settings.max_http_buffer_size,
        logger=log,
        engineio_logger=False,
    )


class WebSocketCompressionOff:
    """Hide the client's permessage-deflate offer from the WebSocket server.

    The eventlet and gevent WebSocket servers accept it whenever offered; the
    header removal keeps one code path for both (see WEBSOCKET_COMPRESSION).
    """

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        return self.app(environ, start_response)


class WebSocketTracker:
    """Remember the TCP socket of each open WebSocket, for a draining worker to close.

    gunicorn puts the connection's socket in the environ; a WebSocket request lasts
    as long as the connection, so membership in the set is exactly "open".
    """

    def __init__(self, app, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    def __call__(self, environ, start_response):
        sock = environ.get("gunicorn.socket")
        if sock is None or environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            return self.app(environ, start_response)
        self.lifecycle.websockets.add(sock)
        try:
            return self.app(environ, start_response)
        finally:
            self.lifecycle.websockets.discard(sock)


def wrap_wsgi(sio: socketio.Server, flask_wsgi_app, settings: Settings, lifecycle: Lifecycle):
    app = socketio.WSGIApp(sio, flask_wsgi_app)
    if not settings.websocket_compression:
        app = WebSocketCompressionOff(app)
    return WebSocketTracker(app, lifecycle)
