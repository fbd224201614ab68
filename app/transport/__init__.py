"""The Engine.IO transport layer: how Socket.IO packets reach and leave the wire.

Namespaces, the event pipeline and the queue (app/sockets, app/core) never import
from here; app/sockets/server.py asks `engine_server_class(settings)` for the
Engine.IO server python-socketio builds on, and the watchdog and the drain ask
`backlog(session)` how much waits for a client (the watchdog, of the sessions
`may_back_up` lists), `closing(session)` whether an ended session's CLOSE still
waits for its client's next poll, and `open_websockets` which connections to cut:
that is the whole interface.

ENGINEIO_TRANSPORT picks the transport: `template` (the default, below) or `stock`,
python-engineio's own `engineio.Server` as released. What stock mode lacks is listed
in docs/architecture.md ("The transport layer").

What is here, and why
---------------------
python-engineio (the library python-socketio runs on) gives every WebSocket three
green threads (reader, writer, pinger) and sends every packet to every client as a
queue put plus a context switch. At 10,000 clients that machinery, not the
application, is the cost. This layer keeps python-engineio's protocol state machine
and replaces the moving parts:

- `websocket.py`: RFC 6455 on a plain socket (handshake, frame reader, frame
  encoding, close codes), checked by Autobahn|Testsuite (docs/conformance.md).
- `protocol.py`: Engine.IO v4 as its specification and Node's server have it (polling
  answers, transport checks, one poll at a time, CLOSE to a waiting poll, the
  upgrade's NOOP), as mixins on python-engineio's server and socket.
- `engine.py`: the Engine.IO side. `FrameWriter` frames a packet once per emit and
  appends it to each recipient's byte-bounded backlog; `WriteBatch` writes every
  backlog with one send at the end of the event loop's turn; one pinger per worker
  replaces one sleeping green thread per session; `Session` is python-engineio's
  socket with that writer, the upgrade deadline and the protocol fixes listed in
  docs/architecture.md ("The transport layer").

Safety properties (tests/transport, tests/security/test_floods.py): no frame
sequence from one client can stall its worker (every frame counts towards the
reader's fair share), grow memory without bound (fragments, pending control
replies and the write backlog are capped in bytes), or corrupt another frame
(every frame, close frames included, goes through one ordered writer).

It builds on python-engineio internals, named in app/adapters/engineio_hooks.py (and
started only on the releases in app/adapters/versions.py).
"""

from __future__ import annotations

import time

import engineio

from config.settings import Settings


def engine_server_class(settings: Settings):
    """The Engine.IO server class python-socketio should build on (ENGINEIO_TRANSPORT)."""
    if settings.engineio_transport == "stock":
        return engineio.Server  # as released: no internal of it is touched
    from app.transport.engine import EngineServer

    return EngineServer


def may_back_up(eio_server) -> list[str]:
    """The sessions whose backlog can be growing (for the watchdog): the template's
    WebSocket writers hand each frame to the kernel at once, so only those waiting for
    a full kernel buffer, and long-polling sessions (a queue); python-engineio's, all."""
    return [sid for sid, session in list(eio_server.sockets.items())
            if (writer := getattr(session, "writer", None)) is None or writer.flushing]


def backlog(session) -> int:
    """Packets accepted for a client and not written yet, under either transport: the
    template's sessions count their writer's backlog, python-engineio's their queue
    (its WebSocket writer takes packets off it as it sends them)."""
    count = getattr(session, "backlog", None)
    return session.queue.qsize() if count is None else count


def open_websockets(eio_server) -> list:
    """The sockets of the open WebSockets the template's transport reads when they are
    readable (no request holds them: the drain cuts them with the others)."""
    return list(getattr(eio_server, "open_websockets", ()))


def closing(session) -> bool:
    """An ended long-polling session whose CLOSE waits for the client's next poll (the
    template's transport keeps it for that poll; python-engineio forgets it at once)."""
    return getattr(session, "farewell_until", 0.0) > time.monotonic()
