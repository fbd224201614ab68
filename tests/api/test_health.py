"""Liveness has no dependencies: it answers even when the queue is unreachable."""

from __future__ import annotations

from app import create_app


def test_health_is_200_without_dependencies(settings):
    # A queue URL nothing listens on: liveness must not care, readiness must.
    app = create_app(settings, message_queue_url="redis://127.0.0.1:1/0",
                     redis_socket_timeout=0.5, gather_timeout=0.4, publish_attempts=1)
    client = app.test_client()
    assert client.get("/api/health").get_json() == {"status": "ok"}
    ready = client.get("/api/ready")
    assert ready.status_code == 503
    assert ready.get_json()["status"] == "unavailable"
