"""gunicorn worker hooks (config/gunicorn.conf.py calls `on_worker_boot`).

At boot, a worker subscribes to the message queue at once, instead of at its first
client: until then it would miss emits and not answer /admin's gathers; and it starts
the slow-consumer watchdog. On SIGTERM it drains (app/sockets/shutdown.py) before
gunicorn's graceful wait.
"""

from __future__ import annotations

import signal

from app.services import EXTENSION_KEY, Services
from app.sockets.server import watch_slow_consumers
from app.sockets.shutdown import CLOSE_MARGIN, drain


def start_queue(services: Services) -> None:
    sio = services.sio
    if not sio.manager_initialized:  # python-socketio otherwise does this on first connect
        sio.manager_initialized = True
        sio.manager.initialize()


def install_graceful_shutdown(services: Services, worker) -> None:
    stop_accepting = worker.handle_exit
    handler_timeout = max(worker.cfg.graceful_timeout - CLOSE_MARGIN, 0.5)

    def on_sigterm(sig, frame):
        stop_accepting(sig, frame)  # gunicorn: stop accepting, then wait for connections
        if not services.lifecycle.draining:
            services.sio.start_background_task(drain, services, handler_timeout)

    signal.signal(signal.SIGTERM, on_sigterm)


def on_worker_boot(worker) -> None:
    """gunicorn `post_worker_init`: the app is loaded in this worker, not serving yet."""
    services: Services = worker.wsgi.extensions[EXTENSION_KEY]
    start_queue(services)
    services.sio.start_background_task(watch_slow_consumers, services.sio,
                                       services.settings.max_queued_packets)
    install_graceful_shutdown(services, worker)
