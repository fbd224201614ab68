"""permessage-deflate is refused unless WEBSOCKET_COMPRESSION turns it on."""

from __future__ import annotations

import base64
import os
import socket


def websocket_handshake(port: int, first_frame: bool = False) -> str:
    """A raw Engine.IO WebSocket upgrade offering permessage-deflate; the response head
    (and with `first_frame`, the first byte of the first frame after it, in hex)."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
               f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data or (first_frame and data.endswith(b"\r\n\r\n")):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode(errors="replace") + (f"\n{rest[0]:02x}" if first_frame else "")


def test_deflate_is_refused_by_default(server):
    response = websocket_handshake(server.port).lower()
    assert response.startswith("http/1.1 101")
    assert "sec-websocket-extensions" not in response


def test_deflate_is_negotiated_when_enabled(start_server):
    server = start_server(WEBSOCKET_COMPRESSION="true")
    response = websocket_handshake(server.port).lower()
    assert response.startswith("http/1.1 101")
    assert "sec-websocket-extensions: permessage-deflate" in response


def test_with_deflate_the_packets_are_compressed(start_server):
    server = start_server(WEBSOCKET_COMPRESSION="true")
    head, first_byte = websocket_handshake(server.port, first_frame=True).rsplit("\n", 1)
    assert "permessage-deflate" in head.lower()
    # the OPEN packet: FIN + RSV1 (compressed, RFC 7692) + text. The template's own
    # writer would send it uncompressed (0x81): with deflate, the library writes.
    assert first_byte == "c1"
