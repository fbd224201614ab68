"""gevent internals the template uses."""

from __future__ import annotations

from app.adapters.hooks import Runners


def os_socket(green):
    """The OS socket under a gevent socket, or None."""
    return getattr(green, "_sock", None)


def take_over(green):
    """A new gevent socket on the descriptor of `green`, which lets it go (detached):
    see eventlet_hooks.take_over. (A dup()'s new number left libev's epoll a stale
    entry for the old one, whose removal failed at the next event: libev then rebuilt
    the whole epoll set, a system call per watched socket, on every such connect.)"""
    family, kind, proto = green.family, green.type, green.proto
    return type(green)(family, kind, proto, fileno=green.detach())


def on_readable(fileno: int, function) -> None:
    """Run `function()` in a green thread of its own once `fileno` is readable (once:
    watch again for more). The event loop holds one I/O watcher meanwhile, not a parked
    green thread (memory per idle connection, docs/performance.md)."""
    from gevent import get_hub

    watch = _ReadWatch(function)
    watch.watcher = get_hub().loop.io(fileno, 1)
    watch.watcher.start(watch.ready)


class _ReadWatch:
    # No closures: the watcher and its callback would point at each other, garbage for
    # the cyclic GC after every read (the worker makes its collections rare).
    __slots__ = ("function", "watcher")

    def __init__(self, function) -> None:
        self.function, self.watcher = function, None

    def ready(self) -> None:
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()
            _RUNNERS.start(self.function)


def _spawn(function, argument) -> None:
    from gevent import spawn_raw

    spawn_raw(function, argument)


def _call_soon(function, *args) -> None:
    from gevent import get_hub

    get_hub().loop.run_callback(function, *args)


def _park():
    from gevent import get_hub

    return get_hub().switch()


_RUNNERS = Runners(32, _spawn, _call_soon, _park)
