"""gunicorn configuration, read from the same settings object as the app.

    gunicorn -c config/gunicorn.conf.py

ASYNC_MODE picks the worker class: eventlet (default, as the design card says;
gunicorn 25.x is the last series that ships it) or gevent (the one-line switch:
ASYNC_MODE=gevent). Workers are set explicitly: gunicorn would otherwise read
WEB_CONCURRENCY.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config.settings import load_settings

_settings = load_settings()

wsgi_app = "wsgi:application"
bind = _settings.bind
workers = _settings.workers
worker_class = _settings.async_mode
# Concurrent clients per worker: every Socket.IO connection holds one.
worker_connections = _settings.worker_connections
reuse_port = _settings.reuse_port_enabled
timeout = _settings.timeout
graceful_timeout = _settings.graceful_timeout
# The app logs at LOG_LEVEL; gunicorn at debug would also print its whole config.
loglevel = "info" if _settings.log_level == "DEBUG" else _settings.log_level.lower()
errorlog = "-"
accesslog = None  # one line per polling request is noise; nginx logs access
# gunicorn 25's control socket defaults to one path per user: several instances on
# one host (the stack test, or two containers sharing a home) would collide.
control_socket_disable = True


def post_worker_init(worker):
    """Subscribe to the queue at boot; on SIGTERM, drain clients (app/worker.py)."""
    from app.worker import on_worker_boot

    on_worker_boot(worker)
