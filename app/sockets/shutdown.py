"""Graceful shutdown of a worker on SIGTERM (rolling deploys, scale-down).

gunicorn's own SIGTERM handling stops accepting and then waits up to
GRACEFUL_TIMEOUT for open connections, which for WebSocket clients means waiting
until it kills them. Instead, on SIGTERM a worker:

1. drains: readiness turns 503, events get `shutting_down`; new connections are
   refused at the Engine.IO level (handshake 401 `shutting_down`, or the connection
   cut), which socket.io clients retry, never at the namespace, which they do not;
2. lets the event handlers already running finish (their acks are delivered);
3. sends every local socket `shutdown` {reason, reconnect: true}, waits (up to
   CLOSE_GRACE) for the notices to be written, then ends each connection: a WebSocket
   is cut (no close handshake), a long-polling session is closed (its poll gets
   CLOSE, waited for up to FAREWELL_GRACE if the client is between two polls); standard
   clients reconnect by themselves, through the proxy, to a worker that is up;
4. returns: gunicorn, which has waited for its open requests, exits the worker once
   this is done (app/worker.py, `on_worker_exit`: open WebSockets hold no request).

Before all that it tells the other workers it leaves the message queue
(app/core/queue), so that they stop counting it at once.
"""

from __future__ import annotations

import logging

from app.core.lifecycle import wait_until
from app.services import Services
from app.transport import backlog, closing, open_websockets

log = logging.getLogger("app.shutdown")

SHUTDOWN_EVENT = "shutdown"
# Seconds kept, of GRACEFUL_TIMEOUT, for the notices and closes after handlers finish.
CLOSE_MARGIN = 5.0
# Seconds allowed for the shutdown notices to be written before connections end.
CLOSE_GRACE = 1.0
# Seconds a polling client between two polls has to come for its CLOSE.
FAREWELL_GRACE = 3.0


def drain(services: Services, handler_timeout: float) -> int:
    """Drain this worker's Socket.IO clients; return how many connections were closed."""
    sio, lifecycle = services.sio, services.lifecycle
    lifecycle.start_draining()
    # First, so that the others stop counting this worker at once; it stays subscribed
    # and delivers until it exits.
    services.manager.leave()
    if not lifecycle.wait_idle(handler_timeout, sio.sleep):
        log.warning("shutdown: %d handler(s) still running after %.1fs", lifecycle.in_flight,
                    handler_timeout)
    notice = {"reason": "server_shutdown", "reconnect": True}
    for namespace, handler in sio.namespace_handlers.items():
        for sid in list(getattr(handler, "identities", ())):
            sio.emit(SHUTDOWN_EVENT, notice, to=sid, namespace=namespace, ignore_queue=True)
    sessions = dict(sio.eio.sockets)
    wait_until(lambda: all(backlog(session) == 0 for session in sessions.values()),
               CLOSE_GRACE, sio.sleep)
    for eio_sid, session in sessions.items():
        if not session.upgraded:
            # polling: end the session; its poll gets CLOSE and the client reconnects
            sio.end_session(eio_sid)
    # WebSockets: cut the TCP connection (no close handshake), which standard clients
    # treat as a lost connection and reconnect.
    cut = lifecycle.cut_websockets(open_websockets(sio.eio))
    log.info("shutdown: notified %d session(s), cut %d websocket(s)", len(sessions), cut)
    # A polling client between two polls learns of the close at its next one (CLOSE,
    # app/transport/protocol.py), and a cut WebSocket's session ends when its reader
    # reads the cut: the worker waits for both, as it exits once this returns.
    wait_until(lambda: not any(closing(session) for session in sessions.values())
               and not open_websockets(sio.eio), FAREWELL_GRACE, sio.sleep)
    # the recovery records of the sockets gone are written behind: parked before exit
    wait_until(sio.recovery.sessions.written, CLOSE_GRACE, sio.sleep)
    return len(sessions)

