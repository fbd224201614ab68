"""The Engine.IO transport layer: how Socket.IO packets reach and leave the wire.

Namespaces, the event pipeline and the queue (app/sockets, app/core) never import
from here; app/sockets/server.py asks `engine_server_class(settings)` for the
Engine.IO server python-socketio builds on, and the watchdog and the drain ask
`backlog(session)` how much waits for a client (the watchdog, of the sessions
`may_back_up` lists): that is the whole interface.

ENGINEIO_TRANSPORT picks the transport: `template` (the default, below) or `stock`,
python-engineio's own `engineio.Server` as released, for a python-engineio or
python-socketio version the template's transport was not tested with
(`TESTED_VERSIONS`: the template's refuses to start with any other). What stock
mode lacks is listed in docs/architecture.md ("The transport layer").

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

It relies on python-engineio internals: the exact list is in docs/architecture.md,
and the versions it was tested with are `TESTED_VERSIONS` (requirements.txt pins them).
"""

from __future__ import annotations

from importlib import metadata

import engineio

from config.settings import Settings, SettingsError

# The releases the template's transport was tested with (the suite, in both async
# modes): it overrides internals of the first and the server around it overrides
# internals of the second, which any other release may have changed. Keep the pins in
# requirements.txt among these.
TESTED_VERSIONS = {"python-engineio": ("4.15.1",), "python-socketio": ("5.18.1",)}


def untested_versions() -> dict[str, str]:
    """{distribution: installed version} of the libraries not at a tested version."""
    installed = {name: metadata.version(name) for name in TESTED_VERSIONS}
    return {name: version for name, version in installed.items()
            if version not in TESTED_VERSIONS[name]}


def check_versions() -> None:
    """Refuse to run the template's transport on library versions it was not tested
    with: it could fail in any way, at any time, instead of now, with a clear line."""
    untested = untested_versions()
    if not untested:
        return
    found = " and ".join(f"{name} {version}" for name, version in untested.items())
    tested = ", ".join(" or ".join(TESTED_VERSIONS[name]) if len(untested) == 1
                       else f"{name} {' or '.join(TESTED_VERSIONS[name])}" for name in untested)
    pins = " ".join(f"{name}=={TESTED_VERSIONS[name][-1]}" for name in untested)
    verb = "is not a version" if len(untested) == 1 else "are not versions"
    raise SettingsError(f"{found} {verb} the template's transport was tested with "
                        f"({tested}); set ENGINEIO_TRANSPORT=stock or pin {pins}")


def engine_server_class(settings: Settings):
    """The Engine.IO server class python-socketio should build on (ENGINEIO_TRANSPORT)."""
    if settings.engineio_transport == "stock":
        return engineio.Server  # as released: no internal of it is touched
    check_versions()
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
