"""POST /api/rooms/<room>/messages: authentication and validation (delivery: tests/sockets)."""

from __future__ import annotations

import pytest


def test_post_delivers_to_socket_members(server, connect, auth_header):
    import requests

    member = connect(server.url, user="member")
    member.call("join", {"room": "rest-room"})
    response = requests.post(server.url + "/api/rooms/rest-room/messages",
                             json={"text": "hi from rest"}, headers=auth_header("poster"), timeout=10)
    assert response.status_code == 201
    assert member.wait_event("message") == [response.json()["message"]]


@pytest.mark.parametrize("headers, code", [
    ({}, "missing_token"),
    ({"Authorization": "Basic abc"}, "missing_token"),
    ({"Authorization": "Bearer nope"}, "malformed_token"),
])
def test_missing_or_bad_bearer_is_401(http, headers, code):
    response = http.post("/api/rooms/lobby/messages", json={"text": "x"}, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == code
    assert response.headers["WWW-Authenticate"] == f'Bearer error="{code}"'


def test_expired_bearer_is_401(http, make_token):
    token = make_token(iat=1_000_000, exp=1_000_100)
    response = http.post("/api/rooms/lobby/messages", json={"text": "x"},
                         headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "token_expired"


@pytest.mark.parametrize("room, body, field", [
    ("bad room!", {"text": "x"}, "room"),
    ("lobby", {"text": ""}, "text"),
    ("lobby", {"text": "x" * 2001}, "text"),
    ("lobby", {"msg": "x"}, "text"),
])
def test_invalid_room_or_text_is_400(http, auth_header, room, body, field):
    response = http.post(f"/api/rooms/{room}/messages", json=body, headers=auth_header())
    assert response.status_code == 400
    assert field in response.get_json()["error"]["details"]
