"""eventlet internals the template uses."""

from __future__ import annotations

from app.adapters.hooks import Runners


def set_thread_pool_size(threads: int) -> None:
    """Size eventlet's OS thread pool (tpool), unless it started already."""
    from eventlet import tpool

    if tpool._nthreads != threads and not tpool._setup_already:
        tpool.set_num_threads(threads)


class _WebSocketInput:
    """What eventlet's WebSocket server reads the connection's socket from."""

    __slots__ = ("socket",)

    def __init__(self, sock) -> None:
        self.socket = sock

    def get_socket(self):
        return self.socket


def provide_websocket_socket(environ, sock) -> None:
    """Give eventlet's WebSocket server (python-engineio's eventlet driver) the
    connection's socket: `eventlet.input`, which python-engineio's own WSGIApp builds as
    a new class on every request (each open WebSocket then keeps one)."""
    environ["eventlet.input"] = _WebSocketInput(sock)


def os_socket(green):
    """The OS socket under an eventlet green socket (or the next wrapper), or None."""
    return getattr(green, "fd", None)


def take_over(green):
    """A new green socket on the descriptor of `green`, which lets it go (detached): a
    connection that outlives the request whose socket `green` is (gunicorn's close of
    that one then closes nothing). The descriptor keeps its number, so what the hub
    knows of it stays right (a dup()'s new number left gevent's epoll a stale entry,
    rebuilt at a cost of every watched socket)."""
    raw = green.fd
    family, kind, proto = raw.family, raw.type, raw.proto
    return type(green)(type(raw)(family, kind, proto, fileno=raw.detach()))


def on_readable(fileno: int, function) -> None:
    """Run `function()` in a green thread of its own once `fileno` is readable (once:
    watch again for more). The hub holds one listener meanwhile, not a parked green
    thread (memory per idle connection, docs/performance.md). `hub.add` is what
    eventlet's own trampoline waits with; the listener is removed when it fires, as
    trampoline does."""
    from eventlet.hubs import get_hub

    hub = get_hub()
    watch = _ReadWatch(hub, function)
    watch.listener = hub.add(hub.READ, fileno, watch.ready, watch.obsolete, _nothing)


class _ReadWatch:
    # No closures: the listener and its callback would point at each other, garbage
    # for the cyclic GC after every read (the worker makes its collections rare).
    __slots__ = ("function", "hub", "listener")

    def __init__(self, hub, function) -> None:
        self.hub, self.function, self.listener = hub, function, None

    def ready(self, _fileno) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            self.hub.remove(listener)
            _RUNNERS.start(self.function)

    def obsolete(self, *_exc) -> None:  # the descriptor was closed under the watch:
        self.ready(None)  # the function reads it and fails


def _nothing() -> None:
    pass


def _spawn(function, argument) -> None:
    from eventlet import spawn_n

    spawn_n(function, argument)


def _call_soon(function, *args) -> None:
    from eventlet.hubs import get_hub

    get_hub().schedule_call_global(0, function, *args)


def _park():
    from eventlet.hubs import get_hub

    return get_hub().switch()


_RUNNERS = Runners(32, _spawn, _call_soon, _park)
