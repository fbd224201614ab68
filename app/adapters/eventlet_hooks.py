"""eventlet internals the template uses."""

from __future__ import annotations


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
