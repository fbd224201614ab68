"""RFC 6455 on a plain socket: the handshake and the server's side of the frames.

Used by app/sockets/transport.py when the connection is a plain socket and
permessage-deflate is not in play; otherwise the async library's WebSocket server
is used. Compared with eventlet's, it reads whole buffers instead of a few bytes
per call, unmasks with one integer XOR instead of a Python loop per byte, and
keeps no generator, lock or message queue per connection (memory per idle
WebSocket, docs/performance.md). gevent's fallback (simple-websocket) also runs
one more green thread per connection, which this does not.
"""

from __future__ import annotations

import _socket
import base64
import contextlib
import hashlib
import socket
import ssl
import struct

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_READ_SIZE = 65536


class ProtocolError(ValueError):
    """The client broke RFC 6455: the connection is closed."""


def encode_frame(payload: str | bytes, opcode: int | None = None) -> bytes:
    """One whole, unmasked frame (the server never masks nor fragments)."""
    if isinstance(payload, str):
        payload = payload.encode()
        opcode = _TEXT if opcode is None else opcode
    elif opcode is None:
        opcode = _BINARY
    head = 0x80 | opcode
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", head, n) + payload
    if n < 65536:
        return struct.pack("!BBH", head, 126, n) + payload
    return struct.pack("!BBQ", head, 127, n) + payload


def accept(environ, sock) -> bool:
    """Answer a valid upgrade request with 101 on `sock`; False if it is not one."""
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "")
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION") != "13" or environ.get("REQUEST_METHOD") != "GET":
        return False
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return False
    except ValueError:
        return False
    digest = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest())
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + digest + b"\r\n\r\n")
    return True


def raw_socket(green):
    """The non-blocking OS socket under a green one (eventlet `.fd`, gevent `._sock`)."""
    raw = green
    for _ in range(3):  # eventlet may wrap a green socket in another
        if isinstance(raw, _socket.socket) or raw is None:
            break
        raw = getattr(raw, "fd", None) or getattr(raw, "_sock", None)
    if not isinstance(raw, _socket.socket) or isinstance(raw, ssl.SSLSocket) \
            or isinstance(green, ssl.SSLSocket) or raw.gettimeout() != 0.0:
        return None  # TLS in the server, or not a socket we can write to directly
    return raw


def readable_waiter(async_mode: str | None):
    """wait(sock, read=True): park the green thread until `sock` is readable."""
    if async_mode == "eventlet":
        from eventlet.hubs import trampoline

        return trampoline  # called directly: no frame of ours in between
    if async_mode == "gevent":
        from gevent.socket import wait_read

        def wait(sock, read=True):
            wait_read(sock.fileno())

        return wait
    return None


def unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class WebSocket:
    """The server's side of one WebSocket connection over a green socket.

    `wait()` returns the next message (str or bytes), None once the connection is
    closed, and raises ProtocolError on a frame the RFC does not allow. Control
    frames are answered here; `write` (set by the transport) puts those answers in
    the connection's ordered output, so they never split another frame.
    """

    def __init__(self, sock, raw, wait_readable, max_size: int) -> None:
        self.sock = sock
        self.max_size = max_size
        # Reads go to the OS socket (`raw_socket(sock)`) and wait on the event loop
        # directly (`readable_waiter`): eventlet's green recv() is five Python calls
        # deep, kept on the stack of every idle connection (about 1 KB each with its
        # timer, docs/performance.md). No read timeout: a silent client is ended by
        # Engine.IO's ping timeout, which cuts the socket (tests/sockets/test_transport.py).
        self.raw = raw
        self.wait_readable = wait_readable
        self.buffer = bytearray()
        self.start = 0  # where the unread part of the buffer starts
        self.write = lambda frame: sock.sendall(frame)

    def send(self, message: str | bytes) -> None:
        self.write(encode_frame(message))

    def close(self) -> None:
        """Send a close frame and end the connection (its reader wakes up and ends)."""
        with contextlib.suppress(OSError):
            self.sock.sendall(encode_frame(struct.pack("!H", 1000), _CLOSE))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def wait(self) -> str | bytes | None:
        # The only blocking call, recv(), is made from here: the stack a parked
        # connection keeps is as short as it can be (docs/performance.md).
        fragments: list[bytes] = []
        message_opcode = None
        size = 0
        while True:
            frame = self._parse()
            if frame is None:
                try:
                    data = self.raw.recv(_READ_SIZE)
                except BlockingIOError:
                    self.wait_readable(self.raw, read=True)
                    continue
                if not data:
                    return None
                self._append(data)
                continue
            fin, opcode, payload = frame
            if opcode >= _CLOSE:
                if opcode == _CLOSE:
                    self.close()
                    return None
                if opcode == _PING:
                    self.write(encode_frame(payload, _PONG))
                continue  # a pong: nothing to do
            if (opcode == _CONTINUATION) != (message_opcode is not None):
                raise ProtocolError("unexpected continuation" if opcode == _CONTINUATION
                                    else "new message inside a fragmented one")
            if message_opcode is None:
                message_opcode = opcode
            size += len(payload)
            if size > self.max_size:
                raise ProtocolError("message too large")
            fragments.append(payload)
            if fin:
                data = fragments[0] if len(fragments) == 1 else b"".join(fragments)
                if message_opcode == _BINARY:
                    return data
                try:
                    return data.decode()
                except UnicodeDecodeError:
                    raise ProtocolError("text frame is not UTF-8") from None

    def _parse(self) -> tuple[bool, int, bytes] | None:
        """The next whole frame in the buffer (fin, opcode, payload), or None."""
        buffer, start = self.buffer, self.start
        available = len(buffer) - start
        if available < 2:
            return None
        first, second = buffer[start], buffer[start + 1]
        fin, opcode, length = bool(first & 0x80), first & 0x0F, second & 0x7F
        if first & 0x70:
            raise ProtocolError("reserved bits set (no extension was negotiated)")
        if not second & 0x80:
            raise ProtocolError("client frames must be masked")
        if opcode not in (_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG):
            raise ProtocolError(f"unknown opcode {opcode}")
        if opcode >= _CLOSE and (not fin or length > 125):
            raise ProtocolError("control frames must be whole and short")
        header = 2
        if length == 126:
            if available < 4:
                return None
            (length,) = struct.unpack_from("!H", buffer, start + 2)
            header = 4
        elif length == 127:
            if available < 10:
                return None
            (length,) = struct.unpack_from("!Q", buffer, start + 2)
            header = 10
        if length > self.max_size:
            raise ProtocolError("frame too large")
        if available < header + 4 + length:
            return None
        start += header
        mask = bytes(buffer[start:start + 4])
        payload = unmask(bytes(buffer[start + 4:start + 4 + length]), mask)
        self.start = start + 4 + length
        if self.start == len(buffer):  # all read: an idle connection keeps no buffer
            self.buffer, self.start = bytearray(), 0
        return fin, opcode, payload

    def _append(self, data: bytes) -> None:
        if self.start:
            del self.buffer[:self.start]
            self.start = 0
        self.buffer += data
