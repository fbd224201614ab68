"""An echo endpoint on the template's WebSocket code, for Autobahn|Testsuite.

    python bench/autobahn/echo_server.py PORT [eventlet|gevent]

Serves app/transport/websocket.WebSocket with app/transport/engine.FrameWriter
(every write, the close reply included, goes through the ordered writer) under
eventlet or gevent, as in a gunicorn worker, without Engine.IO above it: every
message is sent back as it came (text or binary). Run by bench/autobahn/run.py
(`make autobahn`).
"""

import sys

MODE = sys.argv[2] if len(sys.argv) > 2 else "eventlet"
if MODE == "gevent":
    import gevent.monkey

    gevent.monkey.patch_all()
else:
    import eventlet

    eventlet.monkey_patch()

import socket  # noqa: E402

import engineio  # noqa: E402

from app.transport.engine import Connection, FrameWriter, WriteBatch  # noqa: E402
from app.transport.websocket import (  # noqa: E402
    ProtocolError,
    WebSocket,
    accept,
    pauser,
    raw_socket,
    readable_waiter,
)

MAX_SIZE = 1 << 24  # Autobahn's largest messages (9.x) are 16 MiB


def request_environ(sock) -> dict | None:
    """The request line and headers of the handshake, as a WSGI server puts them."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk or len(data) > 65536:
            return None
        data += chunk
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    environ = {"REQUEST_METHOD": lines[0].split(" ", 1)[0]}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        environ["HTTP_" + name.strip().upper().replace("-", "_")] = value.strip()
    return environ


def serve(sock, server: engineio.Server, batch: WriteBatch) -> None:
    environ = request_environ(sock)
    if environ is None or not accept(environ, sock):
        sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        sock.close()
        return
    raw = raw_socket(sock)
    ws = WebSocket(sock, raw, readable_waiter(MODE), MAX_SIZE, pauser(MODE))
    connection = Connection(ws, sock, raw)
    writer = FrameWriter(connection, sock, server, batch, raw)
    connection.direct_output(writer)
    # as Session._websocket_handler and Session._end in app/transport/engine.py
    code = None
    try:
        while (message := ws.wait()) is not None:
            ws.send(message)
    except ProtocolError as exc:
        code = exc.code
    except OSError:
        writer.abort()
        sock.close()
        return
    connection.closed_by_reader(code)
    writer.close(wait=True)
    connection.drain()
    sock.close()


def main() -> None:
    port = int(sys.argv[1])
    server = engineio.Server(async_mode=MODE)
    server.max_queued_bytes = 4 * MAX_SIZE
    batch = WriteBatch(server)
    listener = socket.create_server(("127.0.0.1", port))
    print(f"echo server ({MODE}) on ws://127.0.0.1:{port}", flush=True)
    while True:
        sock, _ = listener.accept()
        server.start_background_task(serve, sock, server, batch)


if __name__ == "__main__":
    main()
