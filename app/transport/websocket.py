"""RFC 6455 on a plain socket: the handshake and the server's side of the frames.

Used by app/transport/engine.py when the connection is a plain socket and
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
import io
import socket
import ssl
import struct
import time
from codecs import getincrementaldecoder

from app.adapters import eventlet_hooks, gevent_hooks

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_READ_SIZE = 65536
_utf8_decoder = getincrementaldecoder("utf-8")


# Frames a reader handles before it lets the rest of the worker run: every frame
# counts, control frames and empty fragments too (a client sending only PINGs
# froze its worker, tests/security/test_floods.py).
FAIR_SHARE = 16
# Frames one message may be split into: MAX_FRAGMENTS, plus one per MIN_FRAGMENT_BYTES
# of its payload. Empty continuations would never end a message, and the work of a
# message grows with its frames: this bounds it by its bytes (a 4 MiB message in 64-byte
# fragments is legal, Autobahn 9.3/9.4), not by a count alone.
MAX_FRAGMENTS = 1024
MIN_FRAGMENT_BYTES = 64
# Seconds a connection we close waits for the client to close its side.
DRAIN_SECONDS = 2.0
# Close codes a peer may send (RFC 6455 7.4.1; 3000-4999 are for libraries and apps).
_VALID_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011))
PROTOCOL_ERROR, INVALID_DATA, POLICY_VIOLATION, TOO_BIG = 1002, 1007, 1008, 1009


class ProtocolError(ValueError):
    """The client broke RFC 6455 (or the packet rules above it): the connection is
    closed with `code`, after the frames already accepted for it are written."""

    def __init__(self, message: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


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
    """The non-blocking OS socket under a green one (eventlet's or gevent's)."""
    raw = green
    for _ in range(3):  # eventlet may wrap a green socket in another
        if isinstance(raw, _socket.socket) or raw is None:
            break
        raw = eventlet_hooks.os_socket(raw) or gevent_hooks.os_socket(raw)
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


def green_hooks(async_mode: str | None):
    """The adapter module of the async library (app/adapters): its `take_over` (a
    connection's descriptor kept past its request) and `on_readable` (a green thread
    started once a socket is readable: an idle connection keeps no green thread, only
    the event loop's watch of its socket, docs/performance.md); None for another mode."""
    return {"eventlet": eventlet_hooks, "gevent": gevent_hooks}.get(async_mode)


def pauser(async_mode: str | None):
    """pause(0): let the rest of the worker run, then carry on."""
    if async_mode == "eventlet":
        from eventlet import sleep

        return sleep
    if async_mode == "gevent":
        from gevent import sleep

        return sleep
    return None


def close_reply(payload: bytes) -> int:
    """The code to answer a peer's close frame with: its own, or why it is invalid."""
    if not payload:
        return 1000
    if len(payload) == 1:
        return PROTOCOL_ERROR
    code = int.from_bytes(payload[:2], "big")
    if code not in _VALID_CLOSE_CODES and not 3000 <= code <= 4999:
        return PROTOCOL_ERROR
    try:
        payload[2:].decode()
    except UnicodeDecodeError:
        return INVALID_DATA
    return code


def unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


# What `WebSocket.read` returns while no whole message has arrived.
NOT_YET = object()


class _Fragments:
    """A fragmented message so far: one growing buffer, its size and count, and for
    text, the UTF-8 decoder that checks it piece by piece."""

    __slots__ = ("count", "data", "decoder", "size")

    def __init__(self, text: bool) -> None:
        self.data = io.StringIO() if text else bytearray()
        self.decoder = _utf8_decoder() if text else None
        self.size = self.count = 0


class WebSocket:
    """The server's side of one WebSocket connection over a green socket.

    `read()` returns the next message (str or bytes), None once the connection is
    closed (by a close frame: `close_code` is then the answer to send), or NOT_YET
    until a whole message is in, and raises ProtocolError on a frame the RFC does not
    allow (`wait()` waits for the socket instead of NOT_YET). Pings are answered here through
    `reply`, and messages sent through `write`: the transport points both at the
    connection's ordered output, so they never split another frame, and `reply`
    holds this reader back while the client leaves its answers unread.
    """

    draining = False  # set when the reader closes: close() then half-closes, drain() follows
    fragments: _Fragments | None = None  # a fragmented message being read

    def __init__(self, sock, raw, wait_readable, max_size: int, pause=None) -> None:
        self.sock = sock
        self.max_size = max_size
        # Reads go to the OS socket (`raw_socket(sock)`), never waiting: the transport
        # reads when the event loop finds the socket readable. No read timeout: a
        # silent client is ended by Engine.IO's ping timeout, which cuts the socket
        # (tests/sockets/test_transport.py).
        self.raw = raw
        self.wait_readable = wait_readable
        self.pause = pause  # `pauser`: every FAIR_SHARE frames, the others run
        self.frames = FAIR_SHARE
        self.buffer = bytearray()
        self.start = 0  # where the unread part of the buffer starts
        self.close_code = 1000  # sent by close(): the peer's own, or why it is ended
        self.write = self.reply = lambda frame: sock.sendall(frame)

    def send(self, message: str | bytes) -> None:
        self.write(encode_frame(message))

    def close(self) -> None:
        """Send a close frame and end the connection (its reader wakes up and ends;
        if the reader is the one closing, `drain` reads what the client still sends)."""
        with contextlib.suppress(OSError):
            self.sock.sendall(encode_frame(struct.pack("!H", self.close_code), _CLOSE))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR if self.draining else socket.SHUT_RDWR)

    def drain(self) -> None:
        """Read and drop what the client sends after our close frame, until it closes
        too: closing a socket with unread data sends a reset, which can destroy the
        close frame before the client reads it. At most DRAIN_SECONDS and the rest of
        one frame in flight (max_size): a client that goes on sending is just cut."""
        deadline = time.monotonic() + DRAIN_SECONDS
        budget = self.max_size + _READ_SIZE
        with contextlib.suppress(OSError):
            while budget > 0 and (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                data = self.sock.recv(_READ_SIZE)
                if not data:
                    break
                budget -= len(data)
                if self.pause is not None:  # a recv with data ready never waits
                    self.pause(0)

    def wait(self) -> str | bytes | None:
        """The next message; waits for it (the upgrade's handshake, and tests: an open
        connection is read by `read` when its socket is readable, app/transport/engine.py)."""
        while (message := self.read()) is NOT_YET:
            self.wait_readable(self.raw, read=True)
        return message

    def read(self) -> str | bytes | object | None:
        """The next message (str or bytes), None once the connection is closed, or
        NOT_YET when no whole message is in: it never waits (a fragmented message's
        pieces are kept on the connection until the rest comes)."""
        while True:
            frame = self._parse()
            if frame is None:
                try:
                    data = self.raw.recv(_READ_SIZE)
                except BlockingIOError:
                    return NOT_YET
                if not data:
                    return None
                self._append(data)
                continue
            self.frames -= 1
            if not self.frames:
                self.frames = FAIR_SHARE
                if self.pause is not None:
                    self.pause(0)
            fin, opcode, payload = frame
            if opcode >= _CLOSE:
                if opcode == _CLOSE:
                    self.close_code = close_reply(payload)
                    return None
                if opcode == _PING:
                    self.reply(encode_frame(payload, _PONG))
                continue  # a pong: nothing to do
            fragments = self.fragments
            if fragments is None:
                if opcode == _CONTINUATION:
                    raise ProtocolError("unexpected continuation")
                if fin:  # a whole message: the common case
                    if opcode == _BINARY:
                        return payload
                    try:
                        return payload.decode()
                    except UnicodeDecodeError:
                        raise ProtocolError("text frame is not UTF-8", INVALID_DATA) from None
                # one growing buffer (a list of pieces cost twice the message's size
                # in 64-byte fragments); text is checked fragment by fragment: invalid
                # UTF-8 ends the connection at once, not when (if ever) the message ends
                fragments = self.fragments = _Fragments(opcode == _TEXT)
            elif opcode != _CONTINUATION:
                raise ProtocolError("new message inside a fragmented one")
            fragments.size += len(payload)
            fragments.count += 1
            if fragments.size > self.max_size:
                raise ProtocolError("message too large", TOO_BIG)
            if fragments.count > MAX_FRAGMENTS + fragments.size // MIN_FRAGMENT_BYTES:
                raise ProtocolError("message in too many fragments", TOO_BIG)
            decoder = fragments.decoder
            if decoder is None:
                fragments.data += payload
                if fin:
                    self.fragments = None
                    return bytes(fragments.data)
            else:
                try:
                    fragments.data.write(decoder.decode(payload, fin))
                except UnicodeDecodeError:
                    raise ProtocolError("text frame is not UTF-8", INVALID_DATA) from None
                if fin:
                    self.fragments = None
                    return fragments.data.getvalue()

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
            raise ProtocolError("frame too large", TOO_BIG)
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
