"""gunicorn configuration, read from the same settings object as the app.

    gunicorn -c config/gunicorn.conf.py

ASYNC_MODE picks the worker class: eventlet (default, as the design card says;
gunicorn 25.x is the last series that ships it) or gevent (the one-line switch:
ASYNC_MODE=gevent). Workers are set explicitly: gunicorn would otherwise read
WEB_CONCURRENCY.

Metrics (app/core/metrics.py): the master prepares PROMETHEUS_MULTIPROC_DIR before
it forks workers, and removes a dead worker's live gauges.
"""

import glob
import logging
import os
import shutil
import sys
import tempfile

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
if _settings.log_format == "json":
    # gunicorn's own lines, and any library's or warning's (via the root logger), as
    # JSON too: one format per stream for the log pipeline.
    logging.captureWarnings(True)
    _json = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    logconfig_dict = {
        "formatters": {"json": {"()": "config.log_format.JsonFormatter"}},
        "handlers": {"json": _json},
        "root": {"level": "WARNING", "handlers": ["json"]},
        "loggers": {"gunicorn.error": {"level": loglevel.upper(), "handlers": ["json"],
                                       "propagate": False}},
    }

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Names the directory this master created (in the environment, not a global: a reload
# re-reads this file, and a re-exec'd master on USR2 inherits the environment).
PRIVATE_DIR_ENV = "REALTIME_PRIVATE_METRICS_DIR"


def on_starting(server):
    """Before any worker exists: every worker must find the directory in its environment
    when it imports prometheus_client (the value store is chosen at import)."""
    if not _settings.metrics_enabled:
        return
    path = os.environ.get(METRICS_DIR_ENV)
    if path and path != os.environ.get(PRIVATE_DIR_ENV):
        # Values from a previous run would be added to this one's: wiped, as
        # prometheus_client requires. (So never share one directory between servers.)
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        # A directory of this start's own: two servers on one host never mix metrics.
        path = tempfile.mkdtemp(prefix="realtime-metrics-")
        os.environ[METRICS_DIR_ENV] = os.environ[PRIVATE_DIR_ENV] = path


def child_exit(server, worker):
    """A worker is gone: its connections no longer count (its counters still do)."""
    if os.environ.get(METRICS_DIR_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    """A stopping worker adds its last deliveries to the shared files."""
    if os.environ.get(METRICS_DIR_ENV):
        from app.core.metrics import deliveries

        deliveries.flush()


def on_exit(server):
    path = os.environ.get(PRIVATE_DIR_ENV)
    if path and path == os.environ.get(METRICS_DIR_ENV):
        shutil.rmtree(path, ignore_errors=True)


def post_worker_init(worker):
    """Subscribe to the queue at boot; on SIGTERM, drain clients (app/worker.py)."""
    from app.worker import on_worker_boot

    on_worker_boot(worker)
