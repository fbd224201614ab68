"""gunicorn internals the template uses (app/worker.py, the WSGI stack).

gunicorn documents its server hooks, not the worker object they are given: these are
the worker's attributes and the environ key the template relies on.
"""

from __future__ import annotations

from collections.abc import Callable


def loaded_app(worker):
    """The WSGI app the worker loaded, or None if it refused to load."""
    return getattr(worker, "wsgi", None)


def stop_accepting(worker) -> Callable:
    """The worker's own SIGTERM handler (stop accepting, then the graceful wait)."""
    return worker.handle_exit


def wrap_connection_handler(worker, wrap: Callable[[Callable], Callable]) -> None:
    """Put `wrap(handle)` in place of the worker's handler of each accepted connection
    (`handle(listener, client, addr)`), before the worker's run() reads it."""
    worker.handle = wrap(worker.handle)


def connection_socket(environ):
    """The client's (green) socket, which gunicorn's async workers put in the environ;
    None under another server."""
    return environ.get("gunicorn.socket")
