"""Liveness has no dependencies: it answers even when the queue is unreachable."""

from __future__ import annotations

import time

from app import create_app
from app.core import lifecycle


def test_health_is_200_without_dependencies(settings):
    # A queue URL nothing listens on: liveness must not care, readiness must.
    app = create_app(settings, message_queue_url="redis://127.0.0.1:1/0",
                     redis_socket_timeout=0.5, gather_timeout=0.4, publish_attempts=1)
    client = app.test_client()
    assert client.get("/api/health").get_json() == {"status": "ok"}
    ready = client.get("/api/ready")
    assert ready.status_code == 503
    assert ready.get_json()["status"] == "unavailable"


def test_readiness_names_a_background_loop_that_cannot_run(app, monkeypatch):
    """A supervised loop is restarted after every error; one that fails at once, again
    and again (a control listener that dies on every command), cannot do its duty: the
    worker is not ready, and says which loop and why."""
    monkeypatch.setattr(lifecycle, "_failing", {})
    failures = []

    def control_listener():
        if len(failures) < lifecycle.CRASH_LOOP_FAILURES:
            failures.append(1)
            raise TypeError("Object of type set is not JSON serializable")

    lifecycle.supervised(lambda seconds: None, control_listener)
    assert len(failures) == lifecycle.CRASH_LOOP_FAILURES  # restarted each time, then ran
    ready = app.test_client().get("/api/ready")
    assert ready.status_code == 503
    problem = ready.get_json()["checks"]["background_tasks"]
    assert "control_listener" in problem and "not JSON serializable" in problem, problem
    # once it has run for CRASH_LOOP_SECONDS without failing, it is fine again
    later = time.monotonic() + lifecycle.CRASH_LOOP_SECONDS + 1
    assert lifecycle.failing_tasks(now=later) is None
