"""/admin-ui, the Socket.IO Admin UI's namespace (app/sockets/admin_ui.py), as the UI
speaks to it: a sign-in with the template's credentials, a session token for the next
visit, the socket list and figures of every worker, read-only unless configured."""

from __future__ import annotations

import pytest
import socketio

from tests.helpers import Client, wait_for

UI = "/admin-ui"


def admin_ui(url: str, auth: dict) -> Client:
    client = Client()
    client.namespace = UI
    return client.connect(url, [UI], auth=auth)


def refusal(url: str, auth: dict) -> dict:
    client = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(url, [UI], auth=auth)
    client.close()
    return client.connect_errors[-1]["data"]


def test_an_admin_signs_in_and_sees_every_socket_then_comes_back_with_its_session(
        cluster, connect):
    watched = [connect(server.url, user=f"seen{n}") for n, server in enumerate(cluster)]
    ui = admin_ui(cluster[0].url, {"username": "admin", "password": "admin-password"})
    try:
        [token] = ui.wait_event("session")
        assert ui.wait_event("config")[0] == {"supportedFeatures": []}  # read-only
        sids = {client.sio.get_sid("/chat") for client in watched}
        [listed] = ui.wait_event("all_sockets")
        assert sids <= {socket["id"] for socket in listed}  # both servers' sockets
        seen = next(s for s in listed if s["id"] == watched[1].sio.get_sid("/chat"))
        assert seen["nsp"] == "/chat" and seen["data"]["user"] == "seen1"
        assert "authorization" not in seen["handshake"]["headers"]
        stats = ui.wait_event("server_stats", count=2)
        assert len({s["serverId"] for s in stats}) == 2
        # refreshed while someone watches (ADMIN_UI_INTERVAL)
        assert len(ui.wait_event("all_sockets", count=2)) >= 2
        ack = ui.call("_disconnect", ("/chat", False, watched[0].sio.get_sid("/chat")))
        assert ack["error"]["code"] == "forbidden", ack
        assert watched[0].sio.connected
        # while it watches, every worker tells it of connects, room changes and disconnects
        live: list[tuple] = []
        for event in ("socket_connected", "room_joined", "socket_disconnected"):
            ui.sio.on(event, lambda *args, event=event: live.append((event, *args)), namespace=UI)
        late = connect(cluster[1].url, user="late")
        sid = late.sio.get_sid("/chat")
        wait_for(lambda: any(e[0] == "socket_connected" and e[1]["id"] == sid for e in live),
                 message=lambda: f"socket_connected in {live}")
        assert late.call("join", {"room": "watched"})["ok"] is True
        wait_for(lambda: ("room_joined", "/chat", "room:watched", sid) in [e[:4] for e in live],
                 message=lambda: f"room_joined in {live}")
        late.close()
        wait_for(lambda: ("socket_disconnected", "/chat", sid) in [e[:3] for e in live],
                 message=lambda: f"socket_disconnected in {live}")
    finally:
        ui.close()
    again = admin_ui(cluster[1].url, {"sessionId": token})
    assert again.wait_event("config")
    assert "session" not in {name for _, name, _ in again.received}  # no new token
    again.close()
    # the session is the Admin UI's alone: not an admin's access token
    other = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        other.connect(cluster[0].url, ["/admin"], auth={"token": token})
    assert other.connect_errors[-1]["data"]["code"] == "invalid_token"
    other.close()


@pytest.mark.parametrize("auth, code", [
    ({"username": "alice", "password": "alice-password"}, "forbidden"),
    ({"username": "admin", "password": "wrong"}, "invalid_credentials"),
    ({"sessionId": None}, "invalid_credentials"),  # the UI's first attempt, no session yet
    ({"sessionId": "not-a-token"}, "malformed_token"),
])
def test_anyone_else_is_refused(server, auth, code):
    assert refusal(server.url, auth)["code"] == code


def test_with_read_only_off_the_ui_disconnects_a_socket_on_any_worker(
        private_redis, start_own_server, connect):
    servers = [start_own_server(MESSAGE_QUEUE_URL=private_redis.url, ADMIN_UI_READ_ONLY="false")
               for _ in range(2)]
    target = connect(servers[1].url, user="target")
    ui = admin_ui(servers[0].url, {"username": "admin", "password": "admin-password"})
    assert "DISCONNECT" in ui.wait_event("config")[0]["supportedFeatures"]
    ack = ui.call("_disconnect", ("/chat", False, target.sio.get_sid("/chat")))
    assert ack == {"ok": True, "sockets": 1}, ack
    wait_for(lambda: target.disconnects, message="the target to be disconnected")
    # "disconnect client" (close): every namespace told, so that the client stays away
    other = connect(servers[1].url, ["/chat", "/admin"], user="root", role="admin")
    ack = ui.call("_disconnect", ("/chat", True, other.sio.get_sid("/chat")))
    assert ack == {"ok": True, "sockets": 1}, ack
    wait_for(lambda: len(other.disconnects) == 2, message="both namespaces to be disconnected")
    assert {reason for _, reason in other.disconnects} == {"server disconnect"}, other.disconnects
    ui.close()


def test_the_ui_works_on_the_in_memory_server_make_run_starts(server, connect):
    watched = connect(server.url, user="solo")
    ui = admin_ui(server.url, {"username": "admin", "password": "admin-password"})
    try:
        [listed] = ui.wait_event("all_sockets")
        assert watched.sio.get_sid("/chat") in {socket["id"] for socket in listed}
        assert len(ui.wait_event("server_stats")) == 1
    finally:
        ui.close()
