"""gunicorn configuration, read from the same settings object as the app.

    gunicorn -c config/gunicorn.conf.py

ASYNC_MODE picks the worker class: eventlet (default; gunicorn 25.x is the last
series that ships it) or gevent (ASYNC_MODE=gevent). Workers are set explicitly:
gunicorn would otherwise read WEB_CONCURRENCY.

Metrics (app/core/metrics.py): the master prepares PROMETHEUS_MULTIPROC_DIR before
it forks workers, and removes a dead worker's live gauges.
"""

import errno
import glob
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import socket
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config.notices import silence_library_notices
from config.settings import SettingsError, load_settings


def _load_versions():
    spec = importlib.util.spec_from_file_location(
        "app_adapters_versions",
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "app", "adapters", "versions.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_versions = _load_versions()

# before gunicorn imports the worker class, and with it eventlet
silence_library_notices()

try:
    _settings = load_settings()
except SettingsError as exc:
    sys.exit(str(exc))  # the list of problems alone (gunicorn printed it in a traceback)

# The worker hooks use gunicorn internals (app/adapters/gunicorn_hooks.py), tested with
# the releases in app/adapters/versions.py: any other stops the server here. (Read from
# the file: importing app/ would import python-engineio, and the async library with it,
# before gunicorn has patched it.)
if (_problem := _versions.gunicorn_refusal(_settings.async_mode,
                                          importlib.metadata.version("gunicorn"))):
    sys.exit(_problem)

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


def prepare_metrics_dir():
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
    """A stopping worker leaves the message queue (if its drain could not finish that:
    gunicorn ends a worker as soon as its last connection closes), and adds its last
    deliveries to the shared files."""
    from app.worker import on_worker_exit

    on_worker_exit(worker)
    if os.environ.get(METRICS_DIR_ENV):
        from app.core.metrics import deliveries

        deliveries.flush()


def on_exit(server):
    path = os.environ.get(PRIVATE_DIR_ENV)
    if path and path == os.environ.get(METRICS_DIR_ENV):
        shutil.rmtree(path, ignore_errors=True)


class AddressInUse(Exception):
    """Another process serves (or holds) an address this server is told to listen on."""


def _url(address):
    host, port = address
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# The master's claims on its addresses, held (never used) for its whole life.
_claims = []
# The TCP addresses served (for the log line gunicorn leaves blank with REUSE_PORT).
_addresses = []


def claim(address):
    """Make this master the one owner of a TCP address, or raise AddressInUse.

    With REUSE_PORT each worker binds its own SO_REUSEPORT socket, and the kernel
    lets any process of the same user join that group: a second instance (another
    Redis, another version) would start cleanly and get half of the clients. And a
    port held by another program made every worker fail its bind and be restarted
    forever. So the master checks first, before any worker exists:
    1. a lock named after the address (an abstract Unix socket: per network
       namespace, released by the kernel when the holder dies): two instances
       started at the same moment cannot both pass step 2;
    2. a bind without SO_REUSEPORT, which fails while anything listens there,
       reuse-port group or not. It is closed at once, so the workers can bind.
    """
    name = f"\0realtime-template:listen:{_url(address)}"
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind(name)
    except OSError as exc:
        lock.close()
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(f"{_url(address)} is already served by another instance "
                               "of this application on this host") from None
        # no abstract Unix sockets (not Linux): the bind check below still runs
    else:
        _claims.append(lock)
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR as gunicorn sets it: TIME_WAIT leftovers of a previous run
        # are no conflict; a listening socket is.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise AddressInUse(f"cannot listen on {_url(address)}: {exc.strerror} (another "
                               "process holds it: stop it or set another BIND)") from None


def claim_addresses(server):
    """Refuse an address someone else serves (exits)."""
    _addresses[:] = [a for a in server.cfg.address if isinstance(a, tuple)]
    if server.master_pid or os.environ.get("LISTEN_FDS"):
        return  # sockets inherited (USR2 re-exec, systemd): they are ours already
    try:
        for address in _addresses:  # TCP; Unix paths and fds: gunicorn's own checks
            claim(address)
    except AddressInUse as exc:
        server.log.error("%s", exc)
        sys.exit(1)


def on_starting(server):
    """Master, before any socket or worker."""
    claim_addresses(server)
    prepare_metrics_dir()


class _StartupLines(logging.Filter):
    """gunicorn's own start-up lines, made to say what matters.

    - With REUSE_PORT the master holds no socket and printed "Listening at:  (pid)":
      say the address and that each worker listens on it.
    - The eventlet worker's deprecation line at every worker boot: see the warnings
      filters above.
    """

    def filter(self, record):
        if record.msg == "Listening at: %s (%s)" and record.args and not record.args[0]:
            urls = ",".join(_url(a) for a in _addresses)
            record.args = (f"{urls} (SO_REUSEPORT: one socket per worker)", *record.args[1:])
        return not str(record.msg).startswith("The eventlet worker is DEPRECATED")


logging.getLogger("gunicorn.error").addFilter(_StartupLines())


def post_worker_init(worker):
    """Subscribe to the queue at boot; on SIGTERM, drain clients (app/worker.py)."""
    from app.worker import on_worker_boot

    on_worker_boot(worker)
