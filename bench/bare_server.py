"""Bare python-socketio with the reference's events: the template minus its own layers.

    gunicorn -k eventlet -b 127.0.0.1:PORT bench.bare_server:app
Same worker class, queue and permessage-deflate refusal as the template, so the
difference with the template is what the template adds per event.
"""

import os

import socketio

manager = (socketio.RedisManager(os.environ["REDIS_URL"]) if os.environ.get("REDIS_URL")
           else None)
sio = socketio.Server(async_mode=os.environ.get("ASYNC_MODE", "eventlet"),
                      client_manager=manager, transports=["websocket"],
                      max_http_buffer_size=100_000)


@sio.on("join")
def join(sid, payload):
    sio.enter_room(sid, payload["room"])
    return {"ok": True, "room": payload["room"]}


@sio.on("chat")
def chat(sid, payload):
    sio.emit("chat", {"room": payload["room"], "text": payload["text"], "sender": sid},
             to=payload["room"])
    return {"ok": True}


_socketio_app = socketio.WSGIApp(sio)


def app(environ, start_response):
    environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)  # as the template: no deflate
    if environ.get("PATH_INFO") == "/health":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"status": "ok"}']
    return _socketio_app(environ, start_response)
