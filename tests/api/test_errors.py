"""Every HTTP error is JSON, with a code, and never a stack trace."""

from __future__ import annotations

from flask import Blueprint


def test_unknown_path_is_404_json(client):
    response = client.get("/nope")
    assert response.status_code == 404 and response.is_json
    assert response.get_json()["error"]["code"] == "not_found"


def test_wrong_method_is_405_json_with_allow(client):
    response = client.get("/api/auth/token")
    assert response.status_code == 405 and response.is_json
    assert "POST" in response.headers["Allow"]


def test_body_over_the_limit_is_413_json(http, settings):
    response = http.post("/api/auth/token", data="x" * (settings.max_http_buffer_size + 1),
                         content_type="application/json")
    assert response.status_code == 413 and response.is_json


def test_unhandled_exception_is_500_json_without_details(settings):
    from app import create_app

    app = create_app(settings)
    broken = Blueprint("broken", __name__)

    @broken.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    app.register_blueprint(broken)
    response = app.test_client().get("/boom")
    assert response.status_code == 500 and response.is_json
    assert response.get_json() == {"error": {"code": "internal_error",
                                             "message": "the server failed to handle this request"}}
    assert b"secret internals" not in response.data


def test_security_headers_are_set(http):
    response = http.get("/api/health")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
