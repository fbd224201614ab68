"""The Engine.IO transport layer: how Socket.IO packets reach and leave the wire.

Namespaces, the event pipeline and the queue (app/sockets, app/core) never import
from here; app/sockets/server.py asks `engine_server_class()` for the Engine.IO
server python-socketio builds on, and that is the whole interface.

What is here, and why
---------------------
python-engineio (the library python-socketio runs on) gives every WebSocket three
green threads (reader, writer, pinger) and sends every packet to every client as a
queue put plus a context switch. At 10,000 clients that machinery, not the
application, is the cost. This layer keeps python-engineio's protocol state machine
and replaces the moving parts:

- `websocket.py`: RFC 6455 on a plain socket (handshake, frame reader, frame
  encoding, close codes), checked by Autobahn|Testsuite (docs/conformance.md).
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

It relies on python-engineio internals: the exact list is in docs/architecture.md,
and the versions it was tested with are pinned in requirements.txt.
"""

from __future__ import annotations


def engine_server_class():
    """The Engine.IO server class python-socketio should build on."""
    from app.transport.engine import EngineServer

    return EngineServer
