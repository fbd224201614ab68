"""The Engine.IO WebSocket transport, written for many connections and fast fanout.

python-engineio gives every WebSocket connection three green threads: the reader
(the request's own), a writer waiting on a queue, and a pinger sleeping between
pings. Each parked green thread costs about 8 KB here, and every packet to every
client is a queue put, a switch to that client's writer and a send. This module
keeps the protocol and replaces that machinery (measured in docs/performance.md):

- `FrameWriter`: a packet is framed once per emit (the frame is cached on the
  packet, which python-socketio shares between a room's members). A connection's
  first frame of a turn is written at once when its recent turns brought one frame
  each (a room's median member otherwise waited for every member's frame to be
  queued); the rest is appended to its backlog, and `WriteBatch` writes every
  backlog at the end of the event loop's turn with one non-blocking send (a burst:
  one send for all its frames). Only when the kernel buffer is full does the rest
  wait for a green thread started for it, which ends when it is done.
- `EngineServer`: one pinger per worker sends every session its Engine.IO pings,
  instead of one sleeping green thread per session.
- `Session`: python-engineio's socket with that writer. On a plain socket without
  permessage-deflate it speaks RFC 6455 itself (app/transport/websocket.py), and no
  green thread waits on an idle connection: the connection's descriptor outlives its
  HTTP request (taken over), the event loop watches it, and a green thread
  started when it is readable handles what came, then ends (`Session._read`). Its
  reads also refuse frames that are not Engine.IO packets (the stock loop decoded
  them outside its error handling: the WSGI server wrote an HTTP 500 into the open
  WebSocket). gunicorn's pool no longer counts such a connection: WORKER_CONNECTIONS
  bounds them here, and the drain finds them through `open_websockets`.

Long-polling sessions keep python-engineio's queue until they upgrade. With
permessage-deflate, or without a plain socket in the environ (another WSGI server,
TLS terminated in gunicorn), the async library's WebSocket server reads, and the
writer keeps the same backlog but writes through it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import time
from urllib.parse import parse_qs

from engineio import exceptions, packet
from engineio.socket import Socket

from app.adapters import engineio_hooks
from app.adapters.gunicorn_hooks import connection_socket
from app.core.lifecycle import Deadlines, sweep_paced, wait_until
from app.core.metrics import SLOW_CONSUMER_DISCONNECTS
from app.transport import closing
from app.transport.protocol import ConformantServer, ConformantSocket
from app.transport.websocket import (
    FAIR_SHARE,
    NOT_YET,
    POLICY_VIOLATION,
    TOO_BIG,
    ProtocolError,
    WebSocket,
    accept,
    encode_frame,
    green_hooks,
    pauser,
    raw_socket,
    readable_waiter,
)

log = logging.getLogger("app.transport")
# Bytes waiting for one client that does not read before it is cut (MAX_QUEUED_BYTES).
MAX_QUEUED_BYTES = 4_000_000
# A connection's turns with frames, one frame each, after one with several (a burst, or
# a send the kernel took only part of), before its first frame of a turn goes out at once.
CALM_TURNS = 3
# Open WebSockets a worker serves (WORKER_CONNECTIONS).
MAX_WEBSOCKETS = 10_000
# Seconds an ended connection's flusher has to notice the cut before its socket closes.
FLUSHER_GRACE = 1.0


def packet_frame(pkt: packet.Packet) -> bytes:
    """The packet's WebSocket frame, encoded once for every recipient of an emit."""
    frame = pkt.__dict__.get("ws_frame")
    if frame is None:
        frame = pkt.ws_frame = encode_frame(pkt.encode())
    return frame


class WriteBatch:
    """Connections with frames to write, written together once the current turn ends.

    An emit only appends a frame to each recipient's backlog; one task per turn of
    the event loop then writes each backlog with a single send. Several messages to
    the same client in one turn (a burst in a busy room) become one system call.
    """

    def __init__(self, server) -> None:
        self.server = server
        self.writers: list[FrameWriter] = []

    def add(self, writer: FrameWriter) -> None:
        if not self.writers:
            self.server.start_background_task(self._write)
        self.writers.append(writer)

    def _write(self) -> None:
        writers, self.writers = self.writers, []
        for n, writer in enumerate(writers):
            writer.batched = False
            # a burst (several frames this turn): batched for the next turns too
            if len(writer.pending) + writer.sent_at_once > 1:
                writer.calm = 0
            elif writer.calm < CALM_TURNS:
                writer.calm += 1
            writer.sent_at_once = False
            try:
                writer.send_pending()
            except Exception:  # one connection's failure must not stall the others
                log.exception("websocket write failed")
                writer.abort()
            except BaseException:  # this task is being killed: the rest go to the next batch
                for rest in writers[n + 1:]:
                    self.add(rest)
                raise


class FrameWriter:
    """Writes one connection's packets in order, without blocking the emitter.

    `backlog` counts the packets not handed to the kernel yet (a batch being written
    counts as one): a client that stops reading makes it grow
    (app.sockets.server.watch_slow_consumers ends it). `queued` counts their bytes
    once the kernel's buffer is full, what is being written included: past
    `max_queued` the connection is cut at once.
    """

    def __init__(self, ws, green, server, batch: WriteBatch, raw=None, name: str = "-") -> None:
        self.ws = ws
        self.name = name
        self.max_queued = getattr(server, "max_queued_bytes", MAX_QUEUED_BYTES)
        self.queued = 0  # bytes not written yet, counted while a flusher waits
        self.server = server
        self.batch = batch
        # raw: our frames straight to this OS socket; None: through the library's
        # WebSocket (it may have negotiated permessage-deflate)
        self.raw = raw
        self.green = green
        self.pending: list = []  # frames (direct) or messages (through the library)
        self.batched = False
        self.calm = CALM_TURNS  # its turns with frames since one had several
        self.sent_at_once = False  # this turn's first frame went out at once
        self.flushing = False
        self.closing = False
        self.closed = False
        self.done = None  # an event, made only for a close that waits (most never do)
        self.drained = None  # an event, made only when the reader waits for the flusher

    @property
    def backlog(self) -> int:
        return len(self.pending) + (self.flushing and not self.closed)

    def write(self, pkt: packet.Packet) -> None:
        if self.raw is not None:
            self.write_frame(packet_frame(pkt))
        elif not self.closing:
            message = pkt.encode()
            self.pending.append(message)
            self.queued += len(message)
            if self.queued > self.max_queued:
                return self._overflow()
            self._start_flushing()

    def write_frame(self, frame: bytes) -> None:
        if self.closing:
            return
        if not (self.batched or self.flushing or self.pending) and self.calm >= CALM_TURNS:
            # the connection's first frame this turn, after calm turns: out at once (a
            # room's median member had waited for every other member's frame to be
            # queued); later ones this turn go with the batch, one send for them all
            self.batched = self.sent_at_once = True
            self.batch.add(self)
            try:
                sent = self.raw.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.abort()
                return
            if sent < len(frame):
                self.pending.append(frame[sent:])
            return
        self.pending.append(frame)
        if not self.batched:  # (a burst's later frames stop here: one check)
            if self.flushing:  # the client is not keeping up: what waits is bounded
                self.queued += len(frame)
                if self.queued > self.max_queued:
                    self._overflow()
            else:
                self.batched = True
                self.batch.add(self)

    def reply(self, frame: bytes) -> None:
        """A control frame the reader answers (a PONG): while the client leaves earlier
        output unread, the reader waits, so unanswered pings stay in the client's
        socket instead of piling up here (tests/security/test_floods.py)."""
        if self.flushing and not self.closing:
            if self.drained is None:
                self.drained = self.server.create_event()
            self.drained.wait()
        self.write_frame(frame)

    def send_pending(self) -> None:
        """Hand the backlog to the kernel without waiting; a rest waits for a flusher."""
        if self.flushing or self.closing or not self.pending:
            return
        data = self.pending[0] if len(self.pending) == 1 else b"".join(self.pending)
        self.pending = []
        try:
            sent = self.raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:  # the peer is gone: the reader sees it too and ends the session
            self.abort()
            return
        if sent < len(data):
            self.pending.append(data[sent:])
            self.queued = len(data) - sent
            if self.queued > self.max_queued:
                return self._overflow()
            self._start_flushing()

    def close(self, wait: bool) -> None:
        """Write the backlog, then close the WebSocket (its close handshake); `wait`:
        until that is done, whoever started it."""
        if not self.closing:
            self.closing = True
            self._start_flushing()
        if wait and not self.closed:
            if self.done is None:
                self.done = self.server.create_event()
            self.done.wait()

    def abort(self) -> None:
        """Drop the backlog and cut the connection: the reader wakes up and ends."""
        self.pending.clear()
        self.closing = True
        sock = self.raw or self.green
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        elif not self.closed:  # no socket known (another WSGI server): the library closes
            self.server.start_background_task(self._close_quietly)
        self._finished()

    def _overflow(self) -> None:
        log.warning("slow consumer %s: %d bytes queued, disconnecting", self.name, self.queued)
        SLOW_CONSUMER_DISCONNECTS.inc()  # as the packet bound's watchdog does
        self.abort()  # its reader ends the session (not here: this may be inside an emit)

    def _close_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()

    def _start_flushing(self) -> None:
        if not self.flushing and not self.closed:
            self.flushing = True
            self.server.start_background_task(self._flush)

    def _flush(self) -> None:
        try:
            while self.pending and not self.closed:
                batch, self.pending = self.pending, []
                if self.raw is not None:
                    data = b"".join(batch)  # one write for the whole backlog
                    self.queued = len(data)  # frames written meanwhile add to it
                    self.green.sendall(data)
                else:
                    for message in batch:
                        self.ws.send(message)
                        self.queued -= len(message)
            if self.closing and not self.closed:
                self.ws.close()
        except Exception as exc:  # a broken connection: the reader ends the session
            log.debug("websocket write failed: %s", exc)
            self.abort()
        finally:
            self.flushing = False
            self.queued = 0
            if self.drained is not None:
                self.drained.set()
                self.drained = None
            if self.closing:
                self._finished()

    def _finished(self) -> None:
        self.closed = True
        if self.done is not None:
            self.done.set()


class Connection:
    """The WebSocket a session reads from, and its socket: ours (with the OS socket
    under it, `raw`) or the async library's (`raw` None)."""

    def __init__(self, ws, green, raw=None) -> None:
        self.ws = ws
        self.green = green
        self.raw = raw
        self.wait = ws.wait  # bound here: no wrapper frame on a parked library reader

    def send(self, message) -> None:
        self.ws.send(message)

    def close(self) -> None:
        self.ws.close()

    def direct_output(self, writer: FrameWriter) -> None:
        """Our WebSocket answers pings through the writer, in order with the rest."""
        if self.raw is not None:
            self.ws.write = writer.write_frame
            self.ws.reply = writer.reply

    def closed_by_reader(self, code: int | None) -> None:
        """The reader ends the connection: our WebSocket's close frame says `code`
        (None: the client's own, or 1000), then `drain` waits for the client's side."""
        if self.raw is not None:
            self.ws.draining = True
            if code is not None:
                self.ws.close_code = code

    def drain(self) -> None:
        if self.raw is not None:
            self.ws.drain()


def library_websocket(websocket_class):
    """python-engineio's `_async["websocket"]` entry: the async library's WebSocket
    server (permessage-deflate, TLS in gunicorn, other WSGI servers), whose
    connection the session handler gets wrapped as a `Connection`."""

    def websocket(handler, server):
        def app(environ, start_response):
            def wrapped(ws):
                return handler(Connection(ws, connection_socket(environ)))
            # .__call__ named: a call through the type slot would add a C frame to
            # the parked stack of every connection (~0.7 KB each)
            return websocket_class(wrapped, server).__call__(environ, start_response)
        return app

    return websocket


class _DetachedQueue:
    """Stands in for python-engineio's queue once a session writes through FrameWriter.

    (A poll still waiting then, released by Session._hand_queue_to, finishes against
    it: python-engineio's poll looks the queue up again after its first get.)
    """

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def put(self, item) -> None:
        pass

    def get(self, block=True, timeout=None):
        raise queue.Empty  # python-engineio's queue_empty, in every async mode

    def task_done(self) -> None:
        pass

    def join(self) -> None:
        pass


DETACHED_QUEUE = _DetachedQueue()


def _close_timed_out(session) -> None:
    # closed whatever a late PONG did meanwhile: a packet was dropped (python-engineio
    # decides at the send, too: its client comes back and is recovered)
    if not session.closed:
        session.server.logger.info("%s: Client is gone, closing socket", session.sid)
        session.close(wait=False, abort=False, reason=session.server.reason.PING_TIMEOUT)


def _direct(environ, server):
    """The OS socket the template's WebSocket code serves this upgrade on (a plain
    socket from gunicorn, a readable-waiter for the async mode, no permessage-deflate
    offered), or None: the async library's WebSocket server serves it."""
    if server.wait_readable is None or "HTTP_SEC_WEBSOCKET_EXTENSIONS" in environ:
        return None
    green = connection_socket(environ)
    return raw_socket(green) if green is not None else None


def _bad_handshake() -> dict:
    # RFC 6455 4.2.2: a refused handshake names the version(s) the server speaks
    return _refusal("bad_handshake", "not a WebSocket upgrade", [("Sec-WebSocket-Version", "13")])


def _refusal(code: str, message: str, headers=(), status: str = "400 BAD REQUEST") -> dict:
    """A JSON answer (400 unless told), in the form python-engineio's handle_request
    writes out (a list would be taken for packets to poll)."""
    return {"status": status,
            "headers": [("Content-Type", "application/json"), *headers],
            "response": json.dumps({"code": code, "message": message}).encode()}


class Session(ConformantSocket, engineio_hooks.SocketHooks):
    """An Engine.IO session: python-engineio's, with the transport above and the
    protocol fixes of app/transport/protocol.py."""

    writer: FrameWriter | None = None
    ping_due: float | None = None
    closing_extra = False  # a second WebSocket for this upgraded session is being closed
    timing_out = False  # a send found it past its ping timeout: being closed
    upgrade: Connection | None = None  # the WebSocket this session is upgrading to

    @property
    def backlog(self) -> int:
        """Packets accepted for this client and not written yet."""
        return self.writer.backlog if self.writer is not None else self.queue.qsize()

    def send(self, pkt):
        if self.writer is None:
            return super().send(pkt)
        if self.check_ping_timeout():
            self.writer.write(pkt)

    def close(self, wait=True, abort=False, reason=None):
        if self.writer is None:
            if self.upgrade is not None:
                # its upgrade ends with it: that connection outlived the session,
                # uncounted by MAX_CONNECTIONS_PER_ADDRESS (tests/security/test_floods.py)
                self._cut(self.upgrade)
            return super().close(wait=wait, abort=abort, reason=reason)
        if not self._disconnected(reason or self.server.reason.SERVER_DISCONNECT):
            return
        if not abort:
            self.send(packet.Packet(packet.CLOSE))
        self.closed = True
        if abort:
            self.writer.abort()
        else:
            self.writer.close(wait)

    def _disconnected(self, reason) -> bool:
        """The application's disconnect handler, once: False if it already ran."""
        if self.closed or self.closing:
            return False
        self.closing = True
        self.server.trigger_handler("disconnect", self.sid, reason, run_async=False)
        return True

    # Pings: the worker's pinger (EngineServer) sends them when due.
    def schedule_ping(self):
        if self.last_ping:
            self.last_ping = None
            self.ping_due = due = time.monotonic() + self.server.ping_interval
            self.server.pings.at(due, self.server._ping_if_due, self.sid)

    def send_ping(self) -> None:
        # The pong is due pingTimeout after the ping was due: a pinger late by up to its
        # resolution (100 ms) does not extend a silent session past the protocol's
        # deadline (the Engine.IO test suite's), at the cost of as much of the client's
        # time to answer (negligible against PING_TIMEOUT's 20 s).
        late = min(time.monotonic() - self.ping_due, self.server.pings.resolution) \
            if self.ping_due is not None else 0.0
        self.ping_due = None
        if not self.closing and not self.closed:
            self.last_ping = time.time() - max(late, 0.0)
            self.send(packet.Packet(packet.PING))

    def upgrade_websocket(self, environ, start_response):
        if self.upgrading:
            # one upgrade at a time: each would hold a connection (and escape
            # MAX_CONNECTIONS_PER_ADDRESS, counted per session)
            return _refusal("upgrade_in_progress", "this session is already upgrading")
        if _direct(environ, self.server) is None:
            return super().upgrade_websocket(environ, start_response)
        server = self.server
        if len(server.open_websockets) >= server.max_websockets:
            # WORKER_CONNECTIONS: an open WebSocket holds no request of gunicorn's (which
            # counts those), so the bound is kept here; a refused handshake is retried
            # by clients, maybe on another worker
            if not self.connected:
                self.close(wait=False, abort=True)
            return _refusal("server_busy", "this worker has its maximum of connections",
                            status="503 SERVICE UNAVAILABLE")
        green = connection_socket(environ)
        # On a plain socket without permessage-deflate: app/transport/websocket.py.
        if not accept(environ, green):
            if not self.connected:  # a new session: it ends here, its address slot freed
                self.close(wait=False, abort=True)
            return _bad_handshake()
        # The connection outlives this request (gunicorn closes its socket when the
        # request ends): it is read when the event loop finds it readable, and no green
        # thread waits on it meanwhile (memory per idle connection).
        green = server.take_over(green)
        raw = raw_socket(green)
        ws = WebSocket(green, raw, server.wait_readable, server.max_http_buffer_size,
                       server.pause)
        try:
            self.websocket_handler(Connection(ws, green, raw))
        finally:
            if green not in server.open_websockets:  # not left open to be read: over
                with contextlib.suppress(OSError):
                    green.close()
        raise StopIteration  # gunicorn: the response was written here; it closes its socket

    def _close_extra_websocket(self, environ, raw):
        """Another WebSocket for this session, already on one: accepted and closed at
        once, as Node does (its client sees a close, not a failed handshake: Node's `ws`
        throws on a 400 nobody listens for); the session keeps its own."""
        green = connection_socket(environ)
        if not accept(environ, green):
            return _bad_handshake()
        self.closing_extra = True
        try:
            extra = Connection(WebSocket(green, raw, self.server.wait_readable,
                                         self.server.max_http_buffer_size), green, raw)
            extra.closed_by_reader(POLICY_VIOLATION)
            extra.close()
            extra.drain()
        finally:
            self.closing_extra = False
        raise StopIteration  # gunicorn: the response was written here; it closes the socket

    def websocket_handler(self, ws: Connection):
        green = ws.green
        if green is not None:  # as python-engineio: reads and writes give up after this
            green.settimeout(self.server.ping_interval + self.server.ping_timeout)
        if self.connected:  # an upgrade from long-polling
            if self.upgrading:  # another one started meanwhile (accept() may yield)
                ws.closed_by_reader(POLICY_VIOLATION)
                ws.close()
                ws.drain()
                return []
            self.upgrading = ws.upgrading = True
            self.upgrade = ws
            ws.upgrade_ended = self.server.create_event()
            self.server.start_background_task(self._upgrade_deadline, ws)
            try:
                upgraded = self._upgrade_handshake(ws)
            except Exception as exc:  # a broken or hostile client, as in the read loop
                log.info("%s: websocket upgrade failed (%s)", self.sid, exc)
                ws.closed_by_reader(getattr(exc, "code", POLICY_VIOLATION))
                upgraded = False
            finally:
                self.upgrading = ws.upgrading = False
                self.upgrade = None
                ws.upgrade_ended.set()  # its deadline's task ends now, not at the ping timeout
            if not upgraded:
                ws.closed_by_reader(None)
                ws.close()  # nothing else writes to it yet
                ws.drain()
                return []
        else:
            self.connected = True
        self.upgraded = True
        writer = FrameWriter(ws, green, self.server, self.server.write_batch, ws.raw, self.sid)
        ws.direct_output(writer)
        self._hand_queue_to(writer)
        if ws.raw is not None:
            # our WebSocket: read whenever its socket is readable, by a green thread
            # started then (`_read`); none waits while the client is quiet. Read now
            # first: the upgrade's reads may have taken in more than the handshake.
            self.server.open_websockets.add(ws.green)
            self._read()
            return []
        error = self._receive(ws, ws.wait)  # the library's WebSocket: this thread waits
        self._end(ws, writer, error)
        error = None  # it holds this frame (its traceback): freed now, not by the cyclic GC
        return []

    def _read(self) -> None:
        """The client's socket is readable: handle every whole packet in, then watch the
        socket again, or end the connection if it is over."""
        writer = self.writer
        ws = writer.ws
        try:
            error = self._receive(ws, ws.ws.read)
            if error is NOT_YET:
                self.server.on_readable(ws.raw.fileno(), self._read)
                return
        except Exception as exc:  # nothing may leave a connection unread and unended
            log.exception("%s: websocket read failed", self.sid)
            error = exc
        try:
            self._end(ws, writer, error)
            # a flusher waiting to write wakes on the cut (abort): closed under it, its
            # wait would outlive the descriptor
            wait_until(lambda: not writer.flushing, FLUSHER_GRACE, self.server.sleep)
        finally:
            error = None  # its traceback may hold this frame: freed now, not by the GC
            self.server.open_websockets.discard(ws.green)
            with contextlib.suppress(OSError):
                ws.green.close()

    def _receive(self, ws: Connection, read) -> Exception | object | None:
        """Handle the client's packets as `read` returns them: NOT_YET once it has no
        whole one (it does not wait), else the connection is over (None: closed, or
        the reason)."""
        max_size = self.server.max_http_buffer_size
        received = 0
        while not self.closed:
            try:
                data = read()
                if data is NOT_YET:
                    return NOT_YET
                if isinstance(data, str) and (not data or data[0] not in "0123456"):
                    # python-engineio would fail to decode it outside its error handling;
                    # a type the protocol does not have (7-9) is a parse error to Node too
                    raise ProtocolError("malformed Engine.IO packet", POLICY_VIOLATION)
                if data and len(data) > max_size:
                    raise ProtocolError("packet is too large", TOO_BIG)
            except Exception as exc:
                if not self.closed:
                    log.info("%s: websocket closed (%s)", self.sid, exc)
                return exc
            if data is None:  # closed by the client
                return None
            try:
                self.receive(packet.Packet(encoded_packet=data))
            except exceptions.UnknownPacketError:
                pass
            except exceptions.SocketIsClosedError:
                return None
            except Exception as exc:
                log.exception("%s: unexpected error on a received packet", self.sid)
                return exc
            received += 1
            if received % FAIR_SHARE == 0:
                # Reading never waits while the client keeps data coming: without this,
                # one client sending nonstop starved every other connection of the
                # worker (tests/security/test_floods.py). (Our WebSocket also yields
                # every FAIR_SHARE frames; the library's does not.)
                self.server.sleep(0)
        return None

    def _end(self, ws: Connection, writer: FrameWriter, error: Exception | None) -> None:
        """The read loop is over: the client closed, broke the protocol, or is gone.

        After a close frame or a protocol error, what was accepted for the client is
        still written, then the close frame (its code says why, RFC 6455 7.4.1); a
        broken socket is cut.
        """
        code = getattr(error, "code", None)
        if self._disconnected(self.server.reason.TRANSPORT_CLOSE):
            self.closed = True
        if error is None or code is not None:
            ws.closed_by_reader(code)
            writer.close(wait=True)  # waits: the socket is closed once this returns
            ws.drain()
        else:
            writer.abort()
        self.server.sockets.pop(self.sid, None)
        if ws.raw is not None:  # our WebSocket's output is the writer, which points back
            ws.ws.write = ws.ws.reply = None  # to it: freed now, not by the cyclic GC

    def _upgrade_deadline(self, ws: Connection) -> None:
        """An upgrade gets the ping timeout to finish: a probe that never comes would
        keep the connection (and its green thread) forever."""
        ws.upgrade_ended.wait(self.server.ping_timeout)
        if ws.upgrading:
            log.info("%s: websocket upgrade not finished in time", self.sid)
            self._cut(ws)

    @staticmethod
    def _cut(ws: Connection) -> None:
        """End an upgrade's connection: its reader wakes up and the upgrade fails."""
        with contextlib.suppress(OSError):
            if ws.green is not None:
                ws.green.shutdown(socket.SHUT_RDWR)
            else:
                ws.close()

    def _upgrade_handshake(self, ws) -> bool:
        """PING "probe" -> PONG "probe", end the pending poll, then UPGRADE."""
        pkt = packet.Packet(encoded_packet=ws.wait())
        if pkt.packet_type != packet.PING or pkt.data != "probe":
            return False
        ws.send(packet.Packet(packet.PONG, data="probe").encode())
        self.end_poll()
        return packet.Packet(encoded_packet=ws.wait()).packet_type == packet.UPGRADE

    def _hand_queue_to(self, writer: FrameWriter) -> None:
        """Packets queued before the WebSocket (OPEN, CONNECT, ...) go first, in order.

        A NOOP left there was the waiting poll's (end_poll), which a client sending
        UPGRADE without waiting for that poll's answer raced: the poll gets another, on
        the queue it waits on (it would have ended the session at its timeout).
        """
        polled, queued = self.queue, []
        while not polled.empty():
            pkt = polled.get_nowait()
            polled.task_done()
            if pkt is not None and pkt.packet_type != packet.NOOP:
                queued.append(pkt)
        self.writer = writer
        self.queue = DETACHED_QUEUE  # its memory is freed: ~1.5 KB per connection
        self.end_poll(polled)
        for pkt in queued:
            writer.write(pkt)

class _Sessions(dict):
    """python-engineio creates `engineio.socket.Socket` by name: made a Session here
    (EngineServer.sockets keeps every dict assigned to it one of these)."""

    def __setitem__(self, sid, session):
        if type(session) is Socket:
            session.__class__ = Session
        super().__setitem__(sid, session)


class EngineServer(ConformantServer, engineio_hooks.ServerHooks):
    """python-engineio's server with the sessions above, one pinger per worker and the
    protocol fixes of app/transport/protocol.py."""

    def __init__(self, *args, max_queued_bytes: int = MAX_QUEUED_BYTES,
                 max_websockets: int = MAX_WEBSOCKETS, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_queued_bytes = max_queued_bytes
        self.max_websockets = max_websockets
        # the sockets of open WebSockets read by `Session._read` (the drain cuts them)
        self.open_websockets: set = set()
        hooks = green_hooks(self.async_mode)
        self.on_readable = hooks.on_readable if hooks else None
        self.take_over = hooks.take_over if hooks else None
        # Pings are sent when due, late by `resolution` at most: the client allows
        # pingInterval + pingTimeout, and python-engineio's grace period covers the rest.
        self.pings = Deadlines(self.start_background_task, self.sleep,
                               resolution=min(0.1, self.ping_interval / 4))
        self.write_batch = WriteBatch(self)
        self.wait_readable = readable_waiter(self.async_mode)  # eventlet or gevent
        self.pause = pauser(self.async_mode)
        engineio_hooks.wrap_websocket_server(self, library_websocket)

    def __setattr__(self, name, value) -> None:
        # python-engineio assigns `self.sockets = {}` (at start, and in disconnect()):
        # whatever it assigns becomes _Sessions, whose items become Sessions. (Not a
        # property: every delivery reads `sockets`, and would pay for a call.)
        if name == "sockets" and type(value) is not _Sessions:
            sessions = _Sessions()
            for sid, session in value.items():
                sessions[sid] = session
            value = sessions
        super().__setattr__(name, value)

    def send_packet(self, sid, pkt):
        # Every recipient of every emit comes here: an open WebSocket session's packet
        # goes to its writer with no more calls than needed (python-engineio's path is
        # three more, and two lookups of the session).
        session = self.sockets.get(sid)
        if session is None or session.closed:
            return super().send_packet(sid, pkt)
        last_ping = session.last_ping
        if last_ping and time.time() - last_ping > self.ping_timeout:
            # past its ping timeout: closed in a task of its own (python-engineio closes
            # it here, running the disconnect handler and its Redis calls inside the
            # emit, and so inside a listener's delivery of a room's message)
            if not session.timing_out:
                session.timing_out = True
                self.start_background_task(_close_timed_out, session)
            return None
        writer = session.writer
        if writer is None:  # (polling, or upgrading)
            return super().send_packet(sid, pkt)
        writer.write(pkt)
        return None

    def handle_request(self, environ, start_response):
        # python-engineio answers 400 to a WebSocket for a session already on one,
        # before the session sees it: the session accepts and closes it, as Node does,
        # where the template's WebSocket code serves (else the 400 stays), from an
        # accepted origin, one at a time per session.
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket" \
                and environ.get("REQUEST_METHOD") == "GET" and self.origin_accepted(environ):
            sid = parse_qs(environ.get("QUERY_STRING", "")).get("sid", [None])[0]
            session = self.sockets.get(sid) if sid else None
            if (session is not None and session.upgraded and not session.closed
                    and not session.closing_extra and (raw := _direct(environ, self)) is not None):
                # (or served: StopIteration)
                refused = session._close_extra_websocket(environ, raw)
                start_response(refused["status"], refused["headers"])
                return [refused["response"]]
        return super().handle_request(environ, start_response)

    def service_task(self):
        """python-engineio's watch over every session (ping timeouts, closed sessions
        left in `sockets`), once per ping timeout as there, but in slices: its own
        loop waits once per session (at 5,000 sessions a wake-up every 4 ms)."""
        self.service_task_event = stop = self.create_event()  # set by shutdown()
        sweep_paced(lambda seconds: stop.wait(timeout=seconds), self.ping_timeout,
                    lambda: list(self.sockets), self._check_session)

    def _check_session(self, sid: str) -> None:
        session = self.sockets.get(sid)
        if session is None:
            return
        try:
            if session.closed:
                if not closing(session):  # its CLOSE taken, or no longer waited for
                    self.sockets.pop(sid, None)
            elif not session.closing:
                session.check_ping_timeout()
        except Exception:  # one session's failure must not spare the others
            log.exception("%s: ping timeout check failed", sid)

    def _ping_if_due(self, sid: str) -> None:
        session = self.sockets.get(sid)
        if session is None:
            return
        try:
            due = session.ping_due
            if due is not None and time.monotonic() >= due:
                session.send_ping()
        except Exception:  # one session's failure must not stop every ping
            log.exception("%s: ping failed, session ended", sid)
            with contextlib.suppress(Exception):
                session.close(wait=False, abort=True)
            self.sockets.pop(sid, None)
