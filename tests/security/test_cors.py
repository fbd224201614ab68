"""Browser origins: the allowed one works, any other is refused on REST and Socket.IO."""

from __future__ import annotations

import pytest
import requests
import socketio

GOOD, EVIL = "https://app.example", "https://evil.example"


@pytest.fixture(scope="module")
def cors_server(start_server):
    return start_server(CORS_ALLOWED_ORIGINS=GOOD)


def handshake(server, origin: str | None):
    headers = {"Origin": origin} if origin else {}
    return requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling", headers=headers,
                        timeout=10)


def test_rest_allows_the_listed_origin(cors_server):
    response = requests.get(cors_server.url + "/api/health", headers={"Origin": GOOD}, timeout=10)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == GOOD
    preflight = requests.options(cors_server.url + "/api/auth/token", timeout=10, headers={
        "Origin": GOOD, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.headers["Access-Control-Allow-Origin"] == GOOD
    assert "Content-Type" in preflight.headers["Access-Control-Allow-Headers"]


def test_rest_refuses_other_origins_before_the_view_runs(cors_server):
    response = requests.post(cors_server.url + "/api/auth/token", headers={"Origin": EVIL},
                             json={"username": "alice", "password": "alice-password"}, timeout=10)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in response.headers


def test_socketio_handshake_follows_the_same_list(cors_server):
    assert handshake(cors_server, GOOD).status_code == 200
    assert handshake(cors_server, GOOD).headers["Access-Control-Allow-Origin"] == GOOD
    assert handshake(cors_server, EVIL).status_code == 400
    assert handshake(cors_server, None).status_code == 200  # not a browser


def test_a_client_from_another_origin_cannot_connect(cors_server, connect):
    # (polling: python's WebSocket client always adds its own Origin header)
    with pytest.raises(socketio.exceptions.ConnectionError):
        connect(cors_server.url, headers={"Origin": EVIL}, transport="polling")
    assert connect(cors_server.url, headers={"Origin": GOOD}, transport="polling").sio.connected


def test_websocket_upgrade_from_another_origin_is_refused(cors_server):
    import base64
    import os
    import socket

    for origin, status in ((EVIL, b"400"), (GOOD, b"101")):
        request = (f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: "
                   f"127.0.0.1:{cors_server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                   f"Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n")
        with socket.create_connection(("127.0.0.1", cors_server.port), timeout=10) as sock:
            sock.sendall(request.encode())
            assert sock.recv(64).split(b" ")[1] == status, origin


def test_default_is_same_origin_only(server):
    assert handshake(server, EVIL).status_code == 400
    assert handshake(server, server.url).status_code == 200
    rest = requests.get(server.url + "/api/health", headers={"Origin": EVIL}, timeout=10)
    assert rest.status_code == 403
    same = requests.get(server.url + "/api/health", headers={"Origin": server.url}, timeout=10)
    assert same.status_code == 200 and "Access-Control-Allow-Origin" not in same.headers
