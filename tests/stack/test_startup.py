"""Start-up: the log says only what matters, and a server starts without its Redis."""

from __future__ import annotations

import requests

from tests.helpers import (
    RedisServer,
    wait_for,
)


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
