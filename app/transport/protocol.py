"""Engine.IO v4 as the specification and Node's reference server have it, on python-engineio.

Mixins, independent of the template's WebSocket transport (engine.py), so that any
python-engineio server can use them (through the hooks of app/adapters):

    class MyServer(ConformantServer, engineio_hooks.ServerHooks): ...
    class MySocket(ConformantSocket, engineio_hooks.SocketHooks): ...

Sections cited are those of the Engine.IO protocol v4 (socketio/engine.io-protocol,
"Transports", "Upgrade"); the behaviour matched is Node's engine.io (server.ts,
socket.ts, transports/polling.ts).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from urllib.parse import parse_qs

from engineio import exceptions, packet, payload

from app.transport import closing as _closing

log = logging.getLogger("app.transport")

# Packets of one polling POST handled before the worker serves its other clients again
# (a 100 KB POST holds up to 50,000).
POST_SLICE = 32


class _Payload(payload.Payload):
    max_decode_packets = sys.maxsize  # bounded by the body's size (MAX_HTTP_BUFFER_SIZE)


def _bad_request(start_response, code: int, message: str) -> list[bytes]:
    """Node's answer to a request it cannot serve: 400 with {code, message}."""
    start_response("400 BAD REQUEST", [("Content-Type", "application/json")])
    return [json.dumps({"code": code, "message": message}).encode()]


class ConformantServer:
    """For an `engineio.Server` subclass: its answers to HTTP requests (with the
    aliases of app/adapters/engineio_hooks.ServerHooks)."""

    def handle_request(self, environ, start_response):
        # "Query parameters": `transport` is mandatory. python-engineio served a
        # request without it as polling; Node answers 400 {"code": 0, ...}.
        query = parse_qs(environ.get("QUERY_STRING", ""))
        transport = query.get("transport", [""])[0]
        if transport not in self.transports:
            return _bad_request(start_response, 0, "Transport unknown")
        # "Handshake": a GET (python-engineio answered a POST without a session as a
        # handshake, and any other method 405); Node: 400 {"code": 2}. OPTIONS is the
        # browser's CORS preflight.
        method = environ.get("REQUEST_METHOD", "GET")
        if method != "OPTIONS" and (method not in ("GET", "POST") or (
                method == "POST" and "sid" not in query)):
            return _bad_request(start_response, 2, "Bad handshake method")
        sid = query.get("sid", [None])[0]
        session = self.sockets.get(sid) if sid is not None else None
        if session is not None and session.closed and self.origin_accepted(environ):
            if _closing(session) and "HTTP_UPGRADE" not in environ:
                if method == "GET":
                    return self._farewell(session, query, environ, start_response)
                if method == "POST":  # as Node while its socket closes: taken, dropped
                    answer = self.ok_response()
                    start_response(answer["status"],
                                   answer["headers"] + self.cors_headers(environ))
                    return [answer["response"]]
            # Node's answer (python-engineio raised KeyError on a POST)
            if not _closing(session):
                self.sockets.pop(sid, None)
            return _bad_request(start_response, 1, "Session ID unknown")
        return super().handle_request(environ, start_response)

    def origin_accepted(self, environ) -> bool:
        """python-engineio's Origin check (it runs before anything else there)."""
        origin = environ.get("HTTP_ORIGIN")
        if not origin or self.cors_allowed_origins == []:
            return True
        allowed = self.cors_allowed_origins_for(environ)
        return allowed is None or origin in allowed

    def session_of(self, sid):
        # python-engineio's `_get_socket` forgets a closed session: one whose CLOSE
        # waits for its poll is kept for it (a late send to it must not lose that)
        session = self.sockets.get(sid)
        if session is not None and session.closed and _closing(session):
            raise KeyError("Session is disconnected")
        return super().session_of(sid)

    def disconnect(self, sid=None):
        if sid is None:
            return super().disconnect()
        # python-engineio's forgot the session at once: its farewell is kept (_farewell)
        session = self.sockets.get(sid)
        if session is not None:
            session.close(reason=self.reason.SERVER_DISCONNECT)
            if not _closing(session):
                self.sockets.pop(sid, None)
        return None

    def _farewell(self, session, query, environ, start_response) -> list[bytes]:
        """The first poll after the server closed a session no poll waited on: what was
        queued for it, CLOSE last (Node's polling transport keeps that CLOSE for the next
        GET; a 400 instead read as a transport error, not a clean close)."""
        try:
            jsonp_index = int(query["j"][0]) if "j" in query else None
        except ValueError:
            return _bad_request(start_response, 3, "Bad request")
        self.sockets.pop(session.sid, None)
        answer = self.ok_response(session.poll(), jsonp_index=jsonp_index)
        start_response(answer["status"], answer["headers"] + self.cors_headers(environ))
        return [answer["response"]]

    def ok_response(self, packets=None, headers=None, jsonp_index=None):
        if packets is None:
            # "Sending data": a POST is answered `ok` (python-engineio said `OK`); Node
            # sends it as text/html
            return {"status": "200 OK", "headers": [("Content-Type", "text/html")],
                    "response": b"ok"}
        return super().ok_response(packets, headers=headers, jsonp_index=jsonp_index)


class ConformantSocket:
    """For an `engineio.socket.Socket` subclass: long-polling by the protocol."""

    poll_pending = False  # a long-polling GET waits for packets
    # (monotonic) until when the CLOSE of a server-side close waits for a poll to take it
    farewell_until = 0.0

    def send(self, pkt):
        if pkt.packet_type == packet.OPEN:
            # python-engineio truncates to whole seconds: a pingInterval of 0.5 s was
            # announced as 0, and clients pinged by it timed out
            server = self.server
            interval = server.ping_interval + server.ping_interval_grace_period
            pkt.data["pingInterval"] = round(interval * 1000)
        return super().send(pkt)

    def poll(self):
        packets = super().poll()
        if self.farewell_until and any(pkt.packet_type == packet.CLOSE for pkt in packets):
            self.farewell_until = 0.0
        if self.upgraded and not self.poll_pending and packets:
            # python-engineio's own WebSocket handler queues the upgrade's NOOP even
            # when no GET waits (see end_poll), and its writer polls the queue: not on
            # the WebSocket
            packets = [pkt for pkt in packets if pkt.packet_type != packet.NOOP] or self.poll()
        return packets

    def end_poll(self, queue=None) -> None:
        """Upgrade: "send a noop packet to any pending GET request (if applicable)". Only
        to one that waits: queued with none waiting, it went out on the new WebSocket.
        (`queue`: the one the poll waits on, if no longer the session's.)"""
        if self.poll_pending:
            (queue or self.queue).put(packet.Packet(packet.NOOP))

    def _expired(self) -> bool:
        """Past its pong's deadline, counted from when its ping was due (the worker's
        sweep, or its pinger, has not come by yet): the session ends now, not when they
        do (Node's timers are exact). A WebSocket session is the sweep's."""
        if self.upgraded:
            return False
        if self.last_ping:
            return not self.check_ping_timeout()
        due = getattr(self, "ping_due", None)  # (monotonic) the template's pinger
        if due is not None and time.monotonic() > due + self.server.ping_timeout:
            self.close(wait=False, reason=self.server.reason.PING_TIMEOUT)
            return True
        return False

    def handle_get_request(self, environ, start_response):
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            return super().handle_get_request(environ, start_response)
        if self._expired():
            raise exceptions.EngineIOError("ping timeout")  # -> 400
        if self.poll_pending:
            # "Receiving data": more than one GET at a time gets 400 and closes the
            # session (the waiting one gets CLOSE: see close()). python-engineio let
            # the two wait, and gave packets to either.
            log.info("%s: overlapping polls, session closed", self.sid)
            self.close(wait=False, reason=self.server.reason.TRANSPORT_ERROR)
            raise exceptions.EngineIOError("overlapping poll")  # -> 400
        self.poll_pending = True
        try:
            return super().handle_get_request(environ, start_response)
        finally:
            self.poll_pending = False

    def handle_post_request(self, environ):
        """A long-polling POST: its packets, as many as MAX_HTTP_BUFFER_SIZE holds.

        python-engineio refused a payload of more than 16 packets with an exception it
        then answered 200 to: every packet of the POST was dropped silently (60 acks
        emitted at once by socket.io-client lost 59). A payload that cannot be decoded,
        or with a packet type the protocol does not have, ends the session with 400
        (as Node does: a parse error closes the session); python-engineio answered an
        unknown type after waiting, forever, for a poll to take the session's CLOSE.
        """
        if self._expired():
            raise exceptions.EngineIOError("ping timeout")  # -> 400
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > self.server.max_http_buffer_size:
            raise exceptions.ContentTooLongError()
        try:
            body = environ["wsgi.input"].read(length).decode("utf-8")
            packets = _Payload(encoded_payload=body).packets
            if any(pkt.packet_type >= len(packet.packet_names) for pkt in packets):
                raise ValueError("unknown packet type")
        except Exception as exc:  # hostile input: any decoding error
            log.info("%s: malformed polling payload (%s)", self.sid, exc)
            self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_ERROR)
            raise exceptions.EngineIOError("malformed payload") from None  # -> 400
        for n, pkt in enumerate(packets, 1):
            if self.closed:  # after a CLOSE packet
                break
            # UPGRADE belongs to a probing WebSocket: here Node ignores it (python-engineio
            # queued a NOOP for each: 50,000 of them for one 100 KB POST of `5`)
            if pkt.packet_type != packet.UPGRADE:
                # OPEN, PING or NOOP from the client: ignored, as on the WebSocket
                with contextlib.suppress(exceptions.UnknownPacketError):
                    self.receive(pkt)
            if n % POST_SLICE == 0:
                self.server.sleep(0)  # a fair share: the worker's other clients go between

    def close(self, wait=True, abort=False, reason=None):
        if not (self.closed or self.closing or self.upgraded):
            # Long-polling: the waiting GET (or the next one) learns why. Closed by the
            # server (ping timeout, a disconnect, abort=True included): CLOSE, as Node's
            # transport close writes; python-engineio sent an empty 200, and none at all
            # at a ping timeout. Closed by the client (its CLOSE packet): NOOP, as Node.
            by_client = reason == self.server.reason.CLIENT_DISCONNECT
            self.queue.put(packet.Packet(packet.NOOP if by_client else packet.CLOSE))
            if reason in (None, self.server.reason.SERVER_DISCONNECT):
                # Ended by the application (a drain, a kick): kept for the next poll if
                # none waits (ConformantServer._farewell), as Node keeps a socket it
                # closes until its transport has said so; for as long as a client that
                # polls at all takes to come back. (A ping timeout or a broken request
                # ends it at once, as there.)
                self.farewell_until = time.monotonic() + self.server.ping_timeout
            # Not waiting: a poll may never come (and python-engineio's poll puts the
            # end marker back when it takes it with the CLOSE: join() never returned).
            return super().close(wait=False, abort=True, reason=reason)
        return super().close(wait=wait, abort=abort, reason=reason)
