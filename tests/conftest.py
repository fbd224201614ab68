"""Fixtures: private Redis, real gunicorn servers, tokens and Socket.IO clients.

Servers shared by many tests are session-scoped (starting gunicorn costs about a
second); tests that stop Redis or kill a server start their own.

For your own tests (docs/extending.md), shaped like Flask's tutorial conftest:
`app`, `client` (Flask's test client), `runner` (its CLI runner), `live_server` (a
gunicorn process), `auth_token(user, role, **claims)`, `socket_client(user,
namespace)` (a connected Socket.IO client) and `private_redis` (a redis-server of
the test's own).
"""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from app import create_app
from app.core.tokens import TokenService
from config.settings import load_settings
from tests.helpers import (
    ROOT,
    AppServer,
    Client,
    RedisClusterServer,
    RedisServer,
    ServerGroup,
    install_node_modules,
    process_environment,
)

# --- tiers ----------------------------------------------------------------
# `make test` runs the in-process tier first (seconds), then the tests against real
# processes once per async mode; the mode-independent ones (what no server's async mode
# changes) run in the first mode only. A test is in the `servers` tier when it uses a
# fixture that starts a process, or its module says so (`pytestmark`).
SERVER_FIXTURES = {"server", "live_server", "cluster", "start_server", "start_own_server",
                   "redis_server", "private_redis", "node_modules", "socket_client",
                   "redis_cluster", "private_redis_cluster"}
SERVER_FOLDERS = {"bench", "browser", "stack"}
MODE_INDEPENDENT = {"asyncapi", "bench", "browser", "config", "deploy", "docs", "web"}
# Handed out first to parallel test processes (their files take the longest), so that
# none is left running alone at the end.
SLOW_FIRST = ("bench", "stack", "browser", "security", "recovery")


def pytest_configure(config):
    config.addinivalue_line("markers", "servers: starts real processes (the second tier)")
    config.addinivalue_line("markers", "mode_independent: the async mode does not change it")


def _folder(item) -> str:
    return Path(item.path).relative_to(ROOT / "tests").parts[0]


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: SLOW_FIRST.index(f) if (f := _folder(item)) in SLOW_FIRST
               else len(SLOW_FIRST))
    for item in items:
        folder = _folder(item)
        if folder in MODE_INDEPENDENT:
            item.add_marker(pytest.mark.mode_independent)
        if folder in SERVER_FOLDERS or SERVER_FIXTURES.intersection(item.fixturenames):
            item.add_marker(pytest.mark.servers)


@pytest.fixture(scope="session")
def settings():
    """The settings the test servers run with (same environment, loaded here)."""
    return load_settings(environ=process_environment(), env_file="")


@pytest.fixture()
def app(settings):
    """An in-process app (in-memory manager) for REST tests through Flask's client."""
    return create_app(settings)


@pytest.fixture()
def client(app):
    """Flask's test client (REST, in process)."""
    return app.test_client()


@pytest.fixture()
def http(client):
    return client


@pytest.fixture()
def runner(app):
    """Flask's CLI runner: runner.invoke(args=["emit", "lobby", "hi"])."""
    return app.test_cli_runner()


# --- failure reports -------------------------------------------------------
LOG_TAIL = 30_000  # characters of each server's log in a failure report


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    item.log_marks = {server: server.log_mark() for server in AppServer.started
                      if server.log_path.exists()}
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries what its servers logged meanwhile."""
    report = (yield).get_result()
    if report.when != "call" or not report.failed:
        return
    marks = getattr(item, "log_marks", {})
    for server in AppServer.started:
        if not server.log_path.exists():
            continue
        text = server.log(since=marks.get(server, 0))
        if text:
            report.sections.append((f"server {server.url} log", text[-LOG_TAIL:]))


# --- tokens --------------------------------------------------------------
@pytest.fixture(scope="session")
def tokens(settings):
    return TokenService(settings)


@pytest.fixture(scope="session")
def make_token(settings):
    """make_token(sub="alice", role="user", key=..., algorithm=..., **claim overrides).

    A claim set to None is left out; the default is a valid token for the servers.
    """

    def make(sub="alice", role="user", *, key=None, algorithm=None, headers=None, **claims):
        now = int(time.time())
        payload = {"sub": sub, "name": sub, "role": role, "iat": now, "exp": now + 300,
                   "iss": settings.jwt_issuer, "aud": settings.jwt_audience, **claims}
        payload = {name: value for name, value in payload.items() if value is not None}
        return jwt.encode(payload, key or settings.jwt_secret,
                          algorithm=algorithm or settings.jwt_algorithm, headers=headers)

    return make


@pytest.fixture(scope="session")
def auth_token(make_token):
    """auth_token(user="alice", role="user", **claims) -> a valid access token (a JWT)."""
    return make_token


@pytest.fixture(scope="session")
def auth_header(make_token):
    def header(sub="alice", role="user"):
        return {"Authorization": f"Bearer {make_token(sub, role)}"}

    return header


# --- processes -----------------------------------------------------------
@pytest.fixture(scope="session")
def redis_server():
    """A private redis-server for the session (never stopped by a test)."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture()
def private_redis():
    """A redis-server of the test's own, which the test may stop and restart."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def redis_cluster():
    """A private Redis Cluster of 3 masters for the session (never stopped by a test)."""
    server = RedisClusterServer().start()
    yield server
    server.cleanup()


@pytest.fixture()
def private_redis_cluster():
    """A Redis Cluster of the test's own (3 masters, one replica of each), which the test
    may break."""
    server = RedisClusterServer(masters=3, replicas=3).start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def start_server():
    """start_server(**env) -> a running AppServer, stopped at the end of the session."""
    servers = ServerGroup()
    yield servers.start
    servers.stop_all()


@pytest.fixture()
def start_own_server():
    """Like start_server, for servers a test stops or breaks: stopped after the test."""
    servers = ServerGroup()
    yield servers.start
    servers.stop_all()


@pytest.fixture(scope="session")
def server(start_server):
    """One server with the in-memory manager: the README's default."""
    return start_server()


@pytest.fixture(scope="session")
def live_server(server):
    """The app served by gunicorn, as in production: `.url`, `.log()`."""
    return server


@pytest.fixture(scope="session")
def cluster(start_server, redis_server):
    """Two server processes sharing emits through the private Redis."""
    return [start_server(MESSAGE_QUEUE_URL=redis_server.url) for _ in range(2)]


@pytest.fixture(scope="session")
def node_modules():
    """bench/node_modules (official socket.io-client), installed on first use."""
    return install_node_modules()


# --- clients -------------------------------------------------------------
@pytest.fixture()
def connect(make_token):
    """connect(url, namespaces=["/chat"], user="alice", role="user", auth=..., ...) -> Client."""
    clients: list[Client] = []
    missing = object()

    def open_client(url, namespaces=("/chat",), user="alice", role="user", auth=missing,
                    headers=None, transport="websocket", reconnection=False) -> Client:
        if auth is missing:
            auth = {"token": make_token(user, role)}
        client = Client(transport, reconnection, headers)
        clients.append(client)
        return client.connect(url, list(namespaces), auth=auth, headers=headers)

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture()
def socket_client(connect, live_server):
    """socket_client(user="alice", namespace="/chat", role="user", server=live_server)
    -> a Client connected to `namespace` (its call/of/wait_event default to it)."""

    def open_client(user="alice", namespace="/chat", role="user", server=None, **kwargs) -> Client:
        client = connect((server or live_server).url, [namespace], user=user, role=role, **kwargs)
        client.namespace = namespace
        return client

    return open_client


@pytest.fixture()
def refused():
    """refused(url, namespace, **connect kwargs) -> the connect_error payload."""

    def attempt(url, namespace="/chat", **kwargs):
        client = Client(kwargs.pop("transport", "websocket"))
        client.watch(namespace)
        try:
            client.sio.connect(url, namespaces=[namespace], auth=kwargs.get("auth"),
                               headers=kwargs.get("headers") or {},
                               transports=[client.transport], wait_timeout=10)
        except Exception:
            pass
        finally:
            client.close()
        assert client.connect_errors, "the connection was not refused"
        return client.connect_errors[0]

    return attempt
