"""Run CPU-bound blocking work (password hashing) off the event loop.

A PBKDF2 check takes about 20 ms of CPU: run in the worker's green thread it stalls
every connection of the worker for that long. Here it runs in the async library's
OS thread pool (hashlib releases the GIL while it hashes); outside a monkey-patched
worker (tests through Flask's client, scripts) it simply runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from app.adapters.eventlet_hooks import set_thread_pool_size

T = TypeVar("T")
# OS threads for such work, per worker. Few on purpose: a login flood then queues for
# them instead of taking every core from the event loop (measured: with eventlet's
# default of 20, acks on a 2-core machine waited ~100 ms during a flood).
THREADS = 2
_gevent_pool = None


def run_blocking(function: Callable[..., T], *args) -> T:
    global _gevent_pool
    if "eventlet" in sys.modules:
        from eventlet import patcher, tpool

        if patcher.is_monkey_patched("socket"):
            set_thread_pool_size(THREADS)
            return tpool.execute(function, *args)
    if "gevent" in sys.modules:
        from gevent import monkey
        from gevent.threadpool import ThreadPool

        if monkey.is_module_patched("socket"):
            if _gevent_pool is None:
                _gevent_pool = ThreadPool(THREADS)
            return _gevent_pool.apply(function, args)
    return function(*args)
