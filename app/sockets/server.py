"""The python-socketio server built from settings, and the WSGI stack around it."""

from __future__ import annotations

import logging

import socketio

from app.core.lifecycle import Lifecycle
from app.core.queue import create_manager
from config.settings import Settings

log = logging.getLogger("app.socketio")
# python-socketio logs every emit and received event at INFO: the template's own
# per-event line is in app.sockets, so keep the library to warnings and errors.
log.setLevel(logging.WARNING)


def create_socketio_server(settings: Settings, namespaces: list[str]) -> socketio.Server:
    return socketio.Server(
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
