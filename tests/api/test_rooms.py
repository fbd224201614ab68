"""POST /api/rooms/<room>/messages: authentication and validation (delivery: tests/sockets)."""

from __future__ import annotations

import pytest
import requests


def test_post_delivers_to_socket_members(server, connect, auth_header):
    member = connect(server.url, user="member")
    member.call("join", {"room": "rest-room"})
    response = requests.post(server.url + "/api/rooms/rest-room/messages",
                             json={"text": "hi from rest"}, headers=auth_header("member"), timeout=10)
    assert response.status_code == 201
    assert member.wait_event("message") == [response.json()["message"]]


def test_posting_needs_a_member_socket_or_the_admin_role(server, connect, auth_header):
    """The socket path's rule: only members post (an admin may, for jobs and back offices)."""
    listener = connect(server.url, user="listener")
    listener.call("join", {"room": "policy"})
    url = server.url + "/api/rooms/policy/messages"
    outsider = requests.post(url, json={"text": "x"}, headers=auth_header("outsider"), timeout=10)
    assert outsider.status_code == 403 and outsider.json()["error"]["code"] == "not_in_room"
    admin = requests.post(url, json={"text": "from ops"}, headers=auth_header("ops", "admin"),
                          timeout=10)
    assert admin.status_code == 201
    assert listener.wait_event("message") == [admin.json()["message"]]


def test_rest_posts_share_the_event_rate(start_own_server, auth_header):
    server = start_own_server(EVENT_RATE="3")
    statuses = [requests.post(server.url + "/api/rooms/fast/messages", json={"text": "x"},
                              headers=auth_header("ops", "admin"), timeout=10)
                for _ in range(6)]
    limited = [r for r in statuses if r.status_code == 429]
    assert [r.status_code for r in statuses][:3] == [201, 201, 201] and limited
    assert limited[0].json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited[0].headers["Retry-After"]) <= 1


@pytest.mark.parametrize("path", ["messages", "presence"])
def test_rest_reads_are_rate_limited(start_own_server, auth_header, path):
    """(Reads had no limit, and each asks every worker whether the user is a member.)"""
    server = start_own_server(EVENT_RATE="3")
    statuses = []
    while len(statuses) < 50 and 429 not in [r.status_code for r in statuses]:
        statuses.append(requests.get(f"{server.url}/api/rooms/reads/{path}",
                                     headers=auth_header("ops", "admin"), timeout=10))
    assert [r.status_code for r in statuses][:3] == [200, 200, 200]
    assert statuses[-1].status_code == 429, [r.status_code for r in statuses]
    assert statuses[-1].json()["error"]["code"] == "rate_limited"


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
