"""POST /api/auth/token: the demo login."""

from __future__ import annotations

import jwt
import pytest


def test_login_returns_a_signed_token_with_the_documented_claims(http, settings):
    response = http.post("/api/auth/token", json={"username": "admin", "password": "admin-password"})

    assert response.status_code == 200
    body = response.get_json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == settings.jwt_ttl_seconds
    assert body["user"] == {"id": "admin", "name": "admin", "role": "admin"}
    claims = jwt.decode(body["access_token"], settings.jwt_secret, algorithms=["HS256"],
                        audience=settings.jwt_audience, issuer=settings.jwt_issuer)
    assert claims["sub"] == "admin" and claims["role"] == "admin" and claims["name"] == "admin"
    assert claims["exp"] - claims["iat"] == settings.jwt_ttl_seconds


@pytest.mark.parametrize("username, password", [
    ("alice", "wrong"), ("nobody", "alice-password"), ("alice", "ALICE-PASSWORD")])
def test_wrong_credentials_are_401(http, username, password):
    response = http.post("/api/auth/token", json={"username": username, "password": password})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_credentials"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("body, kwargs", [
    (None, {"data": "username=alice"}),
    (None, {"data": "{not json", "content_type": "application/json"}),
    ([1, 2], {}),
    ({"username": "alice"}, {}),
    ({"username": "", "password": "x"}, {}),
    ({"username": "alice", "password": 5}, {}),
])
def test_bad_bodies_are_400_json(http, body, kwargs):
    response = http.post("/api/auth/token", json=body, **kwargs) if body is not None \
        else http.post("/api/auth/token", **kwargs)
    assert response.status_code == 400
    assert response.is_json
    assert response.get_json()["error"]["code"] in ("invalid_json", "invalid_payload")


def test_passwords_are_stored_hashed(app):
    store = app.extensions["realtime"].users
    for _user, password_hash in store._users.values():
        assert password_hash.startswith("pbkdf2:sha256:")
        assert "password" not in password_hash
