"""Every way a connect can be refused, against a real server, with its reason code."""

from __future__ import annotations

import base64
import json
import time

import pytest

from tests.helpers import TEST_JWT_SECRET


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned_token(settings) -> str:
    """`alg: none`: a token anyone can forge, refused by construction."""
    now = int(time.time())
    claims = {"sub": "mallory", "name": "mallory", "role": "admin", "iat": now, "exp": now + 300,
              "iss": settings.jwt_issuer, "aud": settings.jwt_audience}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def test_valid_token_in_auth_payload_connects(socket_client):
    client = socket_client("alice")
    assert client.sio.connected
    ack = client.call("join", {"room": "lobby"})
    assert ack["ok"] is True and ack["room"] == "lobby"


def test_valid_token_in_authorization_header_connects(socket_client, auth_token):
    client = socket_client("bob", auth=None, headers={"Authorization": f"Bearer {auth_token('bob')}"})
    assert client.call("join", {"room": "lobby"})["ok"] is True


@pytest.mark.parametrize("auth, code", [
    (None, "missing_token"),
    ({}, "missing_token"),
    ({"token": ""}, "missing_token"),
    ({"token": "not-a-jwt"}, "malformed_token"),
    ({"token": 12345}, "malformed_token"),
    ({"token": "x" * 5000}, "malformed_token"),
    ("a-bare-string", "malformed_token"),
])
def test_missing_or_malformed_token_is_refused(server, refused, auth, code):
    error = refused(server.url, auth=auth)
    assert error["data"]["code"] == code
    assert error["message"] == error["data"]["message"]


def test_wrong_key_is_refused(server, refused, make_token):
    error = refused(server.url, auth={"token": make_token(key="another-key-" + "x" * 40)})
    assert error["data"]["code"] == "invalid_token"
    assert "signature" in error["data"]["message"]


def test_alg_none_is_refused(server, refused, settings):
    error = refused(server.url, auth={"token": unsigned_token(settings)})
    assert error["data"]["code"] == "invalid_token"


def test_other_algorithm_is_refused(server, refused, make_token):
    # Signed with the right key, but an algorithm the server does not accept.
    error = refused(server.url, auth={"token": make_token(algorithm="HS512", key=TEST_JWT_SECRET)})
    assert error["data"]["code"] == "invalid_token"
    assert "algorithm" in error["data"]["message"]


def test_expired_token_is_refused(server, refused, make_token):
    past = int(time.time()) - 3600
    error = refused(server.url, auth={"token": make_token(iat=past - 60, exp=past)})
    assert error["data"]["code"] == "token_expired"


def test_not_yet_valid_token_is_refused(server, refused, make_token):
    error = refused(server.url, auth={"token": make_token(nbf=int(time.time()) + 3600)})
    assert error["data"]["code"] == "invalid_token"


def test_wrong_audience_is_refused(server, refused, make_token):
    error = refused(server.url, auth={"token": make_token(aud="someone-else")})
    assert error["data"]["code"] == "invalid_token"
    assert "audience" in error["data"]["message"]


def test_wrong_issuer_is_refused(server, refused, make_token):
    error = refused(server.url, auth={"token": make_token(iss="someone-else")})
    assert error["data"]["code"] == "invalid_token"
    assert "issuer" in error["data"]["message"]


@pytest.mark.parametrize("claim", ["exp", "sub", "aud", "iss", "iat"])
def test_token_without_a_required_claim_is_refused(server, refused, make_token, claim):
    error = refused(server.url, auth={"token": make_token(**{claim: None})})
    assert error["data"]["code"] == "invalid_token"


def test_unknown_role_is_refused(server, refused, make_token):
    error = refused(server.url, auth={"token": make_token(role="superuser")})
    assert error["data"]["code"] == "invalid_token"


def test_non_admin_is_refused_on_admin(server, refused, make_token):
    error = refused(server.url, "/admin", auth={"token": make_token("alice", "user")})
    assert error["data"]["code"] == "forbidden"


def test_admin_connects_to_admin(socket_client):
    client = socket_client("root", "/admin", role="admin")
    assert client.call("stats", {})["ok"] is True


def test_default_and_unknown_namespaces_are_refused(server, refused, make_token):
    for namespace in ("/", "/nope"):
        error = refused(server.url, namespace, auth={"token": make_token()})
        assert error == {"message": "Invalid namespace"}  # socket.io-protocol v5


def test_refusal_is_logged_without_the_token(server, refused, make_token):
    token = make_token(key="logged-key-" + "y" * 40)
    log_mark = server.log_mark()
    refused(server.url, auth={"token": token})
    assert "connect refused ns=/chat code=invalid_token" in server.log(log_mark)
    assert token not in server.log()
