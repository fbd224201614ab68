"""Token attacks on connect and REST: each refused with its reason code, never logged."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
import requests

from tests.helpers import TEST_JWT_SECRET


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, claims: dict, key: bytes = TEST_JWT_SECRET.encode()) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def claims_of(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def test_algorithm_confusion_is_refused(server, refused, make_token):
    """An RS256 header with an HMAC signature made with the server's key: a library that
    trusted the header could verify it with the wrong algorithm."""
    token = forge({"alg": "RS256", "typ": "JWT"}, claims_of(make_token("mallory", "admin")))
    error = refused(server.url, "/admin", auth={"token": token})
    assert error["data"]["code"] == "invalid_token"


def test_tampered_payload_is_refused(server, refused, make_token):
    """Role escalation: the payload edited to role admin, the signature kept."""
    header, _, signature = make_token("mallory", "user").split(".")
    claims = claims_of(make_token("mallory", "user")) | {"role": "admin"}
    token = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    error = refused(server.url, "/admin", auth={"token": token})
    assert error["data"]["code"] == "invalid_token"
    assert "signature" in error["data"]["message"]


def test_a_user_cannot_reach_admin_events_from_chat(server, connect):
    client = connect(server.url, user="mallory")
    for event in ("kick", "broadcast", "stats", "rooms"):
        assert client.call(event, {"user_id": "alice"})["error"]["code"] == "unknown_event"


def test_token_in_query_string_is_refused_by_default(server, refused, make_token):
    token = make_token("leaky")
    error = refused(server.url + f"?token={token}", auth=None)
    assert error["data"]["code"] == "token_in_query"
    assert token not in server.log()


def test_token_in_query_string_is_accepted_when_enabled(start_server, connect, make_token):
    server = start_server(ALLOW_QUERY_TOKEN="true")
    client = connect(server.url + f"?token={make_token('legacy')}", auth=None)
    assert client.call("join", {"room": "legacy"})["ok"] is True


@pytest.mark.parametrize("size", [4097, 90_000])  # (larger: the packet cap closes the connection)
def test_oversized_tokens_are_refused_before_parsing(server, refused, size):
    error = refused(server.url, auth={"token": "e" * size})
    assert error["data"]["code"] == "malformed_token"


def test_rest_refuses_the_same_attacks(server, make_token):
    tampered = make_token("mallory").rsplit(".", 1)[0] + ".AAAA"
    for token, code in ((tampered, "invalid_token"), ("x" * 5000, "malformed_token"),
                        (forge({"alg": "none"}, {"sub": "m"}), "invalid_token")):
        response = requests.post(server.url + "/api/rooms/lobby/messages", json={"text": "x"},
                                 headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == code
        assert token not in server.log()
