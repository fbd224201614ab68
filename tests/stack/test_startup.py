"""Start-up: the log says only what matters, and a server starts without its Redis."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys

import pytest
import requests

from tests.helpers import (
    ROOT,
    RedisServer,
    process_environment,
    refuse_in_process_tier,
    wait_for,
)


def gunicorn_releases_tested() -> dict[str, tuple[str, ...]]:
    """config/gunicorn.conf.py's TESTED_GUNICORN, read without running the file."""
    tree = ast.parse((ROOT / "config" / "gunicorn.conf.py").read_text())
    (value,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                and getattr(node.targets[0], "id", None) == "TESTED_GUNICORN"]
    return ast.literal_eval(value)


def test_a_started_server_logs_no_deprecation_notices(start_own_server, private_redis):
    # PYTHONWARNINGS empty: Python's own filters, as in production (the tests' default
    # environment hides DeprecationWarning). Two workers: each imports the worker class.
    server = start_own_server(PYTHONWARNINGS="", WORKERS="2", TRANSPORTS="websocket",
                              MESSAGE_QUEUE_URL=private_redis.url)
    log = server.log()
    assert "Booting worker" in log
    assert "deprecat" not in log.lower(), log


def test_a_server_starts_without_its_redis_and_is_ready_once_redis_is(start_own_server):
    """Liveness stays 200 (a restart would not bring Redis back); readiness says why not."""
    redis_server = RedisServer()  # its port, nothing listening yet
    try:
        server = start_own_server(MESSAGE_QUEUE_URL=redis_server.url)
        assert requests.get(server.url + "/api/health", timeout=10).status_code == 200
        response = requests.get(server.url + "/api/ready", timeout=10)
        assert response.status_code == 503
        body = response.json()
        assert body["error"]["code"] == "not_ready"
        assert "message queue unreachable" in body["checks"]["message_queue"]

        redis_server.start()

        wait_for(lambda: requests.get(server.url + "/api/ready", timeout=10).status_code == 200,
                 message="/api/ready once Redis is reachable")
    finally:
        redis_server.cleanup()


@pytest.mark.parametrize("mode", ["eventlet", "gevent"])
def test_gunicorn_serves_a_worker_class_only_on_a_release_it_was_tested_with(mode):
    """gunicorn 26.0 removed the eventlet worker: eventlet on it is refused at start with
    what to do (each async mode's pass runs in its own profile: eventlet's gunicorn 25.x,
    gevent's the newest), and a release nobody tested is refused too."""
    refuse_in_process_tier("gunicorn")
    version = importlib.metadata.version("gunicorn")
    checked = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py",
                              "--check-config"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60, env=process_environment(ASYNC_MODE=mode))
    if mode == "eventlet" and int(version.split(".")[0]) >= 26:
        assert checked.returncode == 1, checked
        assert "gunicorn 26.0 removed the eventlet worker" in checked.stderr
        assert "Traceback" not in checked.stderr
    else:
        assert version in gunicorn_releases_tested()[mode], f"gunicorn {version} untested for {mode}"
        assert checked.returncode == 0, checked.stderr
