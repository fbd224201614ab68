"""gunicorn worker hooks (config/gunicorn.conf.py calls `on_worker_boot`).

At boot, a worker subscribes to the message queue at once, instead of at its first
client: until then it would miss emits and not answer /admin's gathers; it serves once
every other worker has seen it in the queue's set of live workers; and it starts
the slow-consumer watchdog and the metrics' delivery flusher. On SIGTERM it drains
(app/sockets/shutdown.py) before gunicorn's graceful wait.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import socket

from app.adapters import gunicorn_hooks
from app.core.lifecycle import supervised, wait_until
from app.core.metrics import flush_periodically
from app.services import EXTENSION_KEY, Services
from app.sockets.server import watch_slow_consumers
from app.sockets.shutdown import CLOSE_MARGIN, drain


def start_queue(services: Services) -> None:
    sio = services.sio
    if not sio.manager_initialized:  # python-socketio otherwise does this on first connect
        sio.manager_initialized = True
        sio.manager.initialize()


def tune_gc(gen0_threshold: int) -> None:
    """Fewer, cheaper collections: the steady-rate p99 latency came from GC pauses.

    freeze() moves everything allocated at boot (Flask, the app, imported modules) to
    a permanent generation, so full collections no longer walk it; a larger young
    generation threshold makes collections rarer on a message-heavy workload.
    """
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)


def drain_worker(services: Services, handler_timeout: float) -> None:
    try:
        drain(services, handler_timeout)
    finally:
        services.lifecycle.drained = True


def install_graceful_shutdown(services: Services, worker) -> None:
    stop_accepting = gunicorn_hooks.stop_accepting(worker)
    handler_timeout = max(worker.cfg.graceful_timeout - CLOSE_MARGIN, 0.5)

    def on_sigterm(sig, frame):
        stop_accepting(sig, frame)  # gunicorn: stop accepting, then wait for its requests
        if services.lifecycle.start_draining():
            services.sio.start_background_task(drain_worker, services, handler_timeout)

    signal.signal(signal.SIGTERM, on_sigterm)


def prepare_connections(worker) -> None:
    """Every accepted connection, before gunicorn handles it:

    - TCP_NODELAY: a small frame written while the previous one is unacknowledged
      would otherwise wait for the peer's delayed ACK (up to 40 ms; Node's HTTP server
      sets it by default too).
    - A client accepted in the instant before SIGTERM closed the listener reached
      gunicorn's handler after it: `listener.getsockname()` raised EBADF and gunicorn
      logged a traceback. That client is closed instead (it retries, elsewhere).
    """
    def unless_closed(handle):
        def handle_unless_closed(listener, client, addr):
            try:
                listener.getsockname()
            except OSError:
                with contextlib.suppress(OSError):
                    client.close()
                return None
            with contextlib.suppress(OSError):  # (not TCP: a Unix socket)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return handle(listener, client, addr)

        return handle_unless_closed

    gunicorn_hooks.wrap_connection_handler(worker, unless_closed)


def on_worker_exit(worker) -> None:
    """gunicorn `worker_exit`, in the worker, after its last request ended."""
    wsgi = gunicorn_hooks.loaded_app(worker)
    if wsgi is None:
        # the app refused to load (a SettingsError at start): nothing joined the queue,
        # and an error here would bury that refusal under the master's traceback
        return
    services: Services = wsgi.extensions[EXTENSION_KEY]
    if services.lifecycle.draining:
        # gunicorn waited for its requests only: open WebSockets hold none, and the
        # drain is what ends them (gunicorn's master kills the worker at GRACEFUL_TIMEOUT)
        wait_until(lambda: services.lifecycle.drained, worker.cfg.graceful_timeout,
                   services.sio.sleep)
    services.manager.leave()  # waits for the drain's, or does it (any other exit)


def on_worker_boot(worker) -> None:
    """gunicorn `post_worker_init`: the app is loaded in this worker, not serving yet."""
    services: Services = gunicorn_hooks.loaded_app(worker).extensions[EXTENSION_KEY]
    tune_gc(services.settings.gc_gen0_threshold)
    start_queue(services)
    # serving before every other worker knows this one could let their publishes miss
    # its clients and be acked ok (app/core/queue): a fraction of a second at boot
    services.manager.wait_announced()
    sio, settings = services.sio, services.settings
    for loop, *args in ((watch_slow_consumers, sio, settings.max_queued_packets),
                        (flush_periodically, sio.sleep)):
        sio.start_background_task(supervised, sio.sleep, loop, *args)
    install_graceful_shutdown(services, worker)
    prepare_connections(worker)
