"""Every setting of the template, read once from the environment.

Precedence: explicit overrides (tests) > process environment > `.env` file >
per-environment defaults (APP_ENV) > base defaults. Each field's environment
variable is its name in upper case; `.env.example` lists and explains them all.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENVIRONMENTS = ("development", "testing", "production")
ASYNC_MODES = ("eventlet", "gevent")
JWT_ALGORITHMS = ("HS256", "HS384", "HS512")
TRANSPORTS = ("websocket", "polling")
ENGINEIO_TRANSPORTS = ("template", "stock")
LOG_FORMATS = ("text", "json")
ASYNCAPI_ACCESS = ("public", "admin", "off")
# Python's level names (WARN, FATAL and NOTSET included: logging takes them)
LOG_LEVELS = tuple(logging.getLevelNamesMapping())

# Values that are fine on a laptop and fatal on the internet: production refuses them.
INSECURE_SECRET = "dev-insecure-change-me"
INSECURE_JWT_SECRET = "dev-insecure-jwt-key-change-me-0123456789"
DEMO_USERS_DEFAULT = "alice:user:alice-password,bob:user:bob-password,admin:admin:admin-password"
MIN_PRODUCTION_SECRET_LENGTH = 32


class SettingsError(ValueError):
    """A setting is missing, malformed or unsafe for the chosen environment."""


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


@dataclass(frozen=True)
class Settings:
    # --- application -------------------------------------------------------
    app_env: str = "development"
    secret_key: str = INSECURE_SECRET
    log_level: str = "INFO"
    # text: one readable line per record; json: one JSON object per line (worker pid,
    # namespace, event, outcome, user id as fields) for a log pipeline.
    log_format: str = "text"
    # GET /metrics (Prometheus text format). Not for the public: keep it off the
    # internet at the proxy (docs/deployment.md, "Metrics").
    metrics_enabled: bool = True
    # GET /api/asyncapi.json (the event contract): public | admin (an admin's token) |
    # off. Production's default is admin: the contract maps the attack surface.
    asyncapi_access: str = "public"
    # The official Socket.IO Admin UI at /admin-ui/ (app/sockets/admin_ui.py): admins
    # only; read-only unless false (then it may disconnect sockets). Its figures and
    # socket list are refreshed this often, while someone watches.
    admin_ui_read_only: bool = True
    admin_ui_interval: float = 2.0

    # --- authentication (JWT) ---------------------------------------------
    jwt_secret: str = INSECURE_JWT_SECRET
    jwt_algorithm: str = "HS256"
    jwt_issuer: str = "realtime-template"
    jwt_audience: str = "realtime-template-clients"
    # Access tokens: short-lived; a live socket is warned TOKEN_WARNING_SECONDS before
    # its token expires, can send a fresh one (`refresh` event), and is disconnected
    # with `token_expired` when it does not.
    jwt_ttl_seconds: int = 900
    token_warning_seconds: int = 60
    # Refresh tokens (POST /api/auth/refresh): longer-lived, rotated on every use.
    refresh_ttl_seconds: int = 14 * 24 * 3600
    jwt_leeway_seconds: int = 5
    max_token_length: int = 4096
    # Tokens in a URL query string end up in proxy and access logs: refused unless on.
    allow_query_token: bool = False
    # "module:attribute" of a UserStore factory; the demo store reads demo_users.
    user_store: str = "app.core.users:DemoUserStore"
    # username:role:password entries, hashed at start-up, never stored in clear.
    demo_users: tuple[str, ...] = _csv(DEMO_USERS_DEFAULT)
    # Login attempts per minute per client address, and failed ones per username
    # (across workers with Redis); over them: 429 rate_limited with Retry-After.
    login_attempts_per_address: int = 20
    login_failures_per_user: int = 5
    # Signs the control bus's commands (app/core/control.py). Empty: derived from
    # SECRET_KEY, so every instance sharing SECRET_KEY can verify the others.
    control_key: str = ""

    # --- message queue -----------------------------------------------------
    # Empty: in-memory manager (one process). redis://, rediss://, redis+sentinel://,
    # redis+cluster://node1:6379,node2:6379 (rediss+cluster:// with TLS)
    message_queue_url: str = ""
    # The prefix of every key and channel; on a Redis Cluster wrapped in a hash tag
    # ({realtime}) unless it has one.
    message_queue_channel: str = "realtime"
    # Routed fan-out: a logged room's messages go on a channel of its own, read only by
    # the workers holding its members. false: every message on one channel that every
    # worker reads and decodes (the design before; a comparison in `make bench`).
    message_queue_routing: bool = True
    # Partitions of the queue (app/core/queue/partitions.py): each logged room belongs
    # to one, a queue with its own hash tag, so that on a Redis Cluster rooms spread
    # over the masters (a multiple of their number). The same on every worker: changing
    # it is a full restart, not a rolling one. One sender's messages to rooms of two
    # partitions may reach a member of both in either order.
    message_queue_partitions: int = 1
    # Publishers wait for a free connection instead of failing (redis-py's default
    # pool raises "Too many connections" at its cap and python-socketio drops the
    # message after two attempts).
    redis_max_connections: int = 64
    redis_pool_timeout: float = 5.0
    redis_socket_timeout: float = 5.0
    publish_attempts: int = 3

    # --- Socket.IO / Engine.IO --------------------------------------------
    # Empty tuple: same-origin browsers only (non-browser clients send no Origin).
    cors_allowed_origins: tuple[str, ...] = ()
    transports: tuple[str, ...] = ("websocket", "polling")
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    # Largest Engine.IO packet accepted, bytes (also the WebSocket frame cap).
    max_http_buffer_size: int = 100_000
    # permessage-deflate: off. Measured here: ~100 KB extra memory per connection
    # and about 4x less fanout throughput with it on; chat payloads are small. On,
    # clients that offer it are served by the async library's WebSocket server.
    websocket_compression: bool = False
    # template: the template's Engine.IO transport (app/transport: batched writes, one
    # pinger per worker, protocol fixes), refused at start with python-engineio or
    # python-socketio versions it was not tested with. stock: python-engineio's own,
    # for a library upgrade the template's transport does not support yet
    # (docs/architecture.md, "The transport layer": what stock mode lacks).
    engineio_transport: str = "template"
    max_message_length: int = 2000
    gather_timeout: float = 2.0

    # --- history (Redis Streams with a queue, memory without) -----------------
    # Messages kept per room (about: trimmed in Redis's own steps); 0: no history.
    history_max_length: int = 1000
    # A room's history is dropped after this long without a message, and older
    # messages are left out of reads.
    history_max_age_seconds: int = 24 * 3600
    # Messages in the `join` ack (the room's last ones, or those after `since`).
    history_on_join: int = 50
    # A `message` retried with the same `client_id` within this window returns the first
    # result and is delivered once.
    idempotency_window_seconds: int = 300
    # Connection-state recovery (app/core/recovery.py): a socket that reconnects within
    # this long gets its sid, rooms and missed events back; 0: off. Needs history on.
    recovery_window_seconds: int = 120
    # At most this many missed events, and bytes of them, are replayed to one
    # recovering socket (read at once, in memory): past either, it is not recovered and
    # re-joins with `since`, a page at a time.
    recovery_max_entries: int = 1000
    recovery_max_bytes: int = 1_000_000

    # --- limits (per worker) ------------------------------------------------
    # Events per second per socket (average) and the burst allowed above it.
    event_rate: float = 20.0
    event_burst: int = 40
    # Open Engine.IO connections per client address.
    max_connections_per_address: int = 100
    # Sockets (namespace connections) one user may have open at once; with Redis across
    # workers and instances. It also bounds a user's events: this times EVENT_RATE.
    max_connections_per_user: int = 20
    # Rooms one socket may be in at once (its own and its user room not counted).
    max_rooms_per_socket: int = 50
    # Trusted proxies in front (nginx: 1). The client address is then read from
    # X-Forwarded-For; with 0 it is the TCP peer. Never more than you really have.
    proxy_hops: int = 0
    # Packets waiting for a client that does not read (a slow consumer) before it is
    # disconnected; bounds the memory one client can hold.
    max_queued_packets: int = 1000
    # Bytes waiting for such a client (what is being written included): past it the
    # connection is cut at once, checked at every write (app/transport/engine.py).
    max_queued_bytes: int = 4_000_000

    # Garbage collector, per worker: objects alive after boot are frozen (never
    # rescanned) and the young generation collects every GC_GEN0_THRESHOLD allocations
    # instead of Python's 700. 0 keeps Python's defaults. Measured (docs/performance.md):
    # fanout 172k -> 211k deliveries/s; with python-engineio's own transport it also
    # took the steady-rate p99 from 192 to 44 ms (the template's transport allocates
    # too little per delivery for that to matter now: ~5 ms either way).
    gc_gen0_threshold: int = 50_000

    # --- server (read by config/gunicorn.conf.py) --------------------------
    async_mode: str = "eventlet"
    bind: str = "127.0.0.1:5000"
    workers: int = 1
    worker_connections: int = 10_000
    # auto: on when WORKERS > 1. Each worker then opens its own listening socket
    # (SO_REUSEPORT) and the kernel spreads connections across them; measured here
    # without it, one of two workers took all 20 of 20 WebSocket connections. With one
    # worker the master's socket is better: connections wait in its backlog while a
    # dead worker is replaced instead of being refused.
    reuse_port: str = "auto"
    timeout: int = 30
    graceful_timeout: int = 20

    @property
    def uses_redis(self) -> bool:
        return bool(self.message_queue_url)

    @property
    def uses_redis_cluster(self) -> bool:
        return urlsplit(self.message_queue_url).scheme in CLUSTER_SCHEMES

    @property
    def reuse_port_enabled(self) -> bool:
        return self.workers > 1 if self.reuse_port == "auto" else _bool(self.reuse_port)

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    def validate(self) -> Settings:
        problems = []
        if self.app_env not in ENVIRONMENTS:
            problems.append(f"APP_ENV must be one of {', '.join(ENVIRONMENTS)}")
        if self.async_mode not in ASYNC_MODES:
            problems.append(f"ASYNC_MODE must be one of {', '.join(ASYNC_MODES)}")
        if self.jwt_algorithm not in JWT_ALGORITHMS:
            problems.append(f"JWT_ALGORITHM must be one of {', '.join(JWT_ALGORITHMS)}")
        if self.log_level not in LOG_LEVELS:  # (else logging raised at start: a traceback)
            problems.append(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in LOG_FORMATS:
            problems.append(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
        if self.asyncapi_access not in ASYNCAPI_ACCESS:
            problems.append(f"ASYNCAPI_ACCESS must be one of {', '.join(ASYNCAPI_ACCESS)}")
        if self.reuse_port not in ("auto", "true", "false"):
            problems.append("REUSE_PORT must be auto, true or false")
        if self.engineio_transport not in ENGINEIO_TRANSPORTS:
            problems.append(f"ENGINEIO_TRANSPORT must be one of {', '.join(ENGINEIO_TRANSPORTS)}")
        if not self.transports or set(self.transports) - set(TRANSPORTS):
            problems.append("TRANSPORTS must be a non-empty list of websocket, polling")
        if self.message_queue_url and (problem := queue_url_problem(self.message_queue_url)):
            problems.append(f"MESSAGE_QUEUE_URL {problem}")
        elif self.uses_redis_cluster and not hash_tagged(self.message_queue_channel):
            problems.append("MESSAGE_QUEUE_CHANNEL needs a hash tag on a Redis Cluster "
                            "({realtime}): every key of the queue must be in one slot")
        if not 1 <= self.message_queue_partitions <= MAX_PARTITIONS:
            problems.append(f"MESSAGE_QUEUE_PARTITIONS must be 1 to {MAX_PARTITIONS}")
        for name in ("jwt_ttl_seconds", "max_token_length", "redis_max_connections",
                     "max_http_buffer_size", "max_message_length", "workers",
                     "publish_attempts", "worker_connections", "event_rate", "event_burst",
                     "max_connections_per_address", "max_queued_packets",
                     "refresh_ttl_seconds", "login_attempts_per_address",
                     "login_failures_per_user", "max_rooms_per_socket",
                     "history_max_age_seconds", "idempotency_window_seconds",
                     "max_connections_per_user", "recovery_max_entries",
                     "recovery_max_bytes", "max_queued_bytes"):
            if getattr(self, name) <= 0:
                problems.append(f"{name.upper()} must be positive")
        if self.recovery_window_seconds < 0:
            problems.append("RECOVERY_WINDOW_SECONDS must be 0 (off) or more")
        if not self.jwt_secret:
            problems.append("JWT_SECRET must not be empty")
        elif self.jwt_algorithm in JWT_ALGORITHMS and (
                refused := _hmac_key_refusal(self.jwt_algorithm, self.jwt_secret)):
            problems.append(f"JWT_SECRET is not usable as an HMAC secret: {refused}")
        if self.history_max_length < 0 or self.history_on_join < 0:
            problems.append("HISTORY_MAX_LENGTH and HISTORY_ON_JOIN must be 0 or more")
        if self.token_warning_seconds < 0 or self.token_warning_seconds >= self.jwt_ttl_seconds:
            problems.append("TOKEN_WARNING_SECONDS must be at least 0 and less than "
                            "JWT_TTL_SECONDS")
        if self.uses_redis and self.gather_timeout >= self.redis_socket_timeout:
            problems.append("GATHER_TIMEOUT must be less than REDIS_SOCKET_TIMEOUT: a gather "
                            "waits in a Redis BLPOP, which the socket timeout would cut first")
        if self.workers > 1 and not self.uses_redis:
            problems.append("WORKERS > 1 needs MESSAGE_QUEUE_URL: with the in-memory manager "
                            "clients on different workers never see each other's messages")
        if self.workers > 1 and "polling" in self.transports:
            problems.append("WORKERS > 1 needs TRANSPORTS=websocket: gunicorn cannot route a "
                            "client's polling requests to the same worker (use several "
                            "instances behind a sticky proxy for polling, docs/deployment.md)")
        if self.is_production:
            problems.extend(self._production_problems())
        if problems:
            raise SettingsError("invalid configuration:\n  - " + "\n  - ".join(problems))
        return self

    def _production_problems(self) -> list[str]:
        problems = []
        for name, insecure in (("secret_key", INSECURE_SECRET),
                               ("jwt_secret", INSECURE_JWT_SECRET)):
            value = getattr(self, name)
            if not value or value == insecure:
                problems.append(f"{name.upper()} is missing or the development default: "
                                f"set a random value (python -c 'import secrets; "
                                f"print(secrets.token_urlsafe(48))')")
            elif len(value) < MIN_PRODUCTION_SECRET_LENGTH:
                problems.append(f"{name.upper()} must be at least "
                                f"{MIN_PRODUCTION_SECRET_LENGTH} characters in production")
        if "*" in self.cors_allowed_origins:
            problems.append("CORS_ALLOWED_ORIGINS='*' lets any web page act for your users: "
                            "list the allowed origins")
        published = [entry.split(":", 1)[0] for entry in self.demo_users
                     if _has_published_password(entry)]
        if published:
            problems.append(f"DEMO_USERS gives {', '.join(published)} the published demo "
                            "password pattern <name>-password: set your own passwords, or "
                            "DEMO_USERS= (empty) with a real USER_STORE")
        return problems


def _has_published_password(entry: str) -> bool:
    """`name:role:<name>-password`: the README's pattern, so anyone can guess it."""
    name, _, rest = entry.partition(":")
    password = rest.partition(":")[2]
    return password == f"{name}-password"


def _hmac_key_refusal(algorithm: str, secret: str) -> str | None:
    """Why PyJWT refuses `secret` as the key of `algorithm` (the shape of an asymmetric
    key or of a JWK), or None: checked here, so that the server does not start to fail
    at the first token (app/adapters/jwt_hooks.py prepares the key once, at start)."""
    from jwt.algorithms import get_default_algorithms
    from jwt.exceptions import InvalidKeyError

    try:
        get_default_algorithms()[algorithm].prepare_key(secret)
    except InvalidKeyError as exc:
        return str(exc)
    return None


# (each partition is a queue of its own per worker: its connections and green threads)
MAX_PARTITIONS = 64

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def hash_tagged(channel: str) -> bool:
    """Does `channel` hold a Redis Cluster hash tag? Every key and channel of the queue
    starts with it, so they all share one slot. Redis's rule: the first `{`, the first
    `}` after it, and something between them (`a{}b{c}` has none)."""
    start = channel.find("{")
    return start >= 0 and channel.find("}", start + 1) > start + 1


def queue_url_problem(url: str) -> str | None:
    """Why a MESSAGE_QUEUE_URL cannot work, or None.

    A URL without a host ("redis://") passed a prefix check and then meant
    "localhost:6379" to redis-py: in a container, never the intended Redis.
    """
    parsed = urlsplit(url)
    if parsed.scheme not in ("redis", "rediss", "redis+sentinel", "unix", *CLUSTER_SCHEMES):
        # (the URL itself is never echoed: it may hold a password)
        return ("must be empty or a redis://, rediss://, redis+sentinel://, redis+cluster:// "
                "or unix:// URL")
    if parsed.scheme == "unix":
        return None if parsed.path else "unix:// needs the socket's path (unix:///path/redis.sock)"
    if parsed.scheme == "redis+sentinel":
        hosts = parsed.netloc.rpartition("@")[2].split(",")
        if not all(re.fullmatch(r"[^:,]+:\d+", host) for host in hosts):
            return ("redis+sentinel:// needs host:port entries "
                    "(redis+sentinel://host1:26379,host2:26379/0/service-name)")
        return None
    if parsed.scheme in CLUSTER_SCHEMES:
        hosts = parsed.netloc.rpartition("@")[2].split(",")
        if not all(re.fullmatch(r"(\[[^\]]+\]|[^:,\[\]]+):\d+", host) for host in hosts):
            return (f"{parsed.scheme}:// needs host:port entries of the cluster's nodes "
                    f"({parsed.scheme}://node1:6379,node2:6379)")
        if parsed.path.strip("/") not in ("", "0"):
            return "on a Redis Cluster the database can only be 0"
        return None
    try:
        parsed.port  # noqa: B018 (parsing it is the check)
    except ValueError:
        return "has an invalid port"
    if not parsed.hostname:
        return f"needs a host: {parsed.scheme}://host:6379/0"
    return None


# Per-environment defaults, applied before the environment variables.
ENVIRONMENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "development": {"log_level": "DEBUG"},
    "testing": {"log_level": "WARNING", "jwt_ttl_seconds": 300},
    "production": {"bind": "0.0.0.0:5000", "secret_key": "", "jwt_secret": "",
                   "log_level": "INFO", "asyncapi_access": "admin"},
}


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a `.env` file: KEY=VALUE lines, `#` comments, optional quotes."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip().removeprefix("export ").strip()] = value
    return values


def _convert(f: dataclasses.Field, raw: str) -> Any:
    kind = type(f.default) if f.default is not dataclasses.MISSING else str
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        kind = type(f.default_factory())  # type: ignore[misc]
    if kind is bool:
        return _bool(raw)
    if kind is int:
        return int(raw)
    if kind is float:
        return float(raw)
    if kind is tuple:
        return _csv(raw)
    return raw


def load_settings(environ: Mapping[str, str] | None = None,
                  env_file: str | os.PathLike | None = None,
                  **overrides: Any) -> Settings:
    """Build and validate the settings; raises SettingsError with every problem.

    `env_file` defaults to ENV_FILE from the environment, else `.env`; an empty
    ENV_FILE reads no file (the test suite sets it, so a developer's `.env`
    cannot change what the tests run against).
    """
    environ = os.environ if environ is None else environ
    if env_file is None:
        env_file = environ.get("ENV_FILE", ".env")
    source: dict[str, str] = {}
    if env_file:
        source.update(read_env_file(Path(env_file)))
    source.update(environ)

    app_env = overrides.get("app_env") or source.get("APP_ENV", "development")
    values: dict[str, Any] = dict(ENVIRONMENT_DEFAULTS.get(app_env, {}))
    problems = []
    for f in fields(Settings):
        raw = source.get(f.name.upper())
        if raw is None:
            continue
        try:
            values[f.name] = _convert(f, raw)
        except ValueError as exc:
            problems.append(f"{f.name.upper()}: {exc}")
    if problems:
        raise SettingsError("invalid configuration:\n  - " + "\n  - ".join(problems))
    values.update(overrides)
    values["app_env"] = app_env
    channel = values.get("message_queue_channel", Settings.message_queue_channel)
    if (urlsplit(values.get("message_queue_url", "")).scheme in CLUSTER_SCHEMES
            and not hash_tagged(channel)):
        values["message_queue_channel"] = "{" + channel + "}"  # (one slot: hash_tagged)
    if isinstance(values.get("log_level"), str):
        values["log_level"] = values["log_level"].upper()  # LOG_LEVEL=debug works too
    return Settings(**values).validate()


__all__ = ["Settings", "SettingsError", "load_settings", "read_env_file"]

