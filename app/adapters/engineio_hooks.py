"""python-engineio internals the template's transport builds on (app/transport).

`ServerHooks` and `SocketHooks` are `engineio.Server` and `engineio.socket.Socket`
with the private steps the transport replaces under public names (see
app/adapters/hooks.py). `engineio.socket.Socket` itself, and the attributes of a
session the transport reads (`queue`, `upgraded`, `closed`, ...), are not public API
either: the version guard (`versions.TESTED`) covers them.
"""

from __future__ import annotations

import engineio
from engineio.socket import Socket

from app.adapters.hooks import Hooked


class ServerHooks(Hooked, engineio.Server):
    HOOKS = {
        # () -> None: the background loop (python-engineio's checks ping timeouts)
        "_service_task": "service_task",
        # (packets=None, headers=None, jsonp_index=None) -> a 200's response dict
        "_ok": "ok_response",
        # (sid) -> the session; KeyError if unknown or closed (which it forgets)
        "_get_socket": "session_of",
    }
    # (environ) -> the origins a request may come from (None: any)
    cors_allowed_origins_for = engineio.Server._cors_allowed_origins
    # (environ) -> the CORS headers of an answer to that request
    cors_headers = engineio.Server._cors_headers
    # (event, *args, run_async=...) -> the handler's result
    trigger_handler = engineio.Server._trigger_event


def wrap_websocket_server(server: engineio.Server, wrap) -> None:
    """Put `wrap(websocket_class)` in place of the async library's WebSocket server
    class that `server` serves WebSocket requests with."""
    server._async = {**server._async, "websocket": wrap(server._async["websocket"])}


class SocketHooks(Hooked, Socket):
    HOOKS = {
        "_upgrade_websocket": "upgrade_websocket",  # (environ, start_response)
        "_websocket_handler": "websocket_handler",  # (ws): the WebSocket, until it ends
    }
