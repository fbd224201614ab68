"""Two server processes sharing one private Redis: what one emits, the other delivers."""

from __future__ import annotations

import requests

from tests.helpers import wait_for


def test_room_message_crosses_processes(cluster, connect):
    first, second = cluster
    alice = connect(first.url, user="alice")
    bob = connect(second.url, user="bob")
    for client in (alice, bob):
        client.call("join", {"room": "cross"})

    message = alice.call("message", {"room": "cross", "text": "across"})["message"]

    assert bob.wait_event("message") == [message]
    bob_reply = bob.call("message", {"room": "cross", "text": "back", "echo": True})["message"]
    assert alice.wait_event("message") == [bob_reply]
    assert bob.wait_event("message", 2)[-1] == bob_reply


def test_rest_message_reaches_clients_on_every_process(cluster, connect, auth_header):
    clients = [connect(server.url, user=f"u{i}") for i, server in enumerate(cluster)]
    for client in clients:
        client.call("join", {"room": "bridge"})

    response = requests.post(f"{cluster[0].url}/api/rooms/bridge/messages",
                             json={"text": "from rest"}, headers=auth_header("carol", "admin"), timeout=10)

    assert response.status_code == 201
    message = response.json()["message"]
    assert message["sender"] == {"id": "carol", "name": "carol"}
    for client in clients:
        assert client.wait_event("message") == [message]


def test_admin_broadcast_reaches_chat_clients_on_every_process(cluster, connect):
    admin = connect(cluster[1].url, ["/admin"], user="root", role="admin")
    clients = [connect(server.url, user=f"b{i}") for i, server in enumerate(cluster)]

    ack = admin.call("broadcast", {"text": "maintenance at noon"}, namespace="/admin")

    assert ack["ok"] is True
    announcement = ack["announcement"]
    assert announcement["text"] == "maintenance at noon" and announcement["room"] is None
    for client in clients:
        assert announcement in client.wait_event("announcement")


def test_kick_disconnects_every_socket_of_the_user_on_every_process(cluster, connect):
    admin = connect(cluster[0].url, ["/admin"], user="root", role="admin")
    targets = [connect(server.url, user="kickme") for server in cluster]
    targets.append(connect(cluster[1].url, ["/chat", "/admin"], user="kickme", role="admin"))
    bystander = connect(cluster[1].url, user="stays")

    ack = admin.call("kick", {"user_id": "kickme", "reason": "spam"}, namespace="/admin")

    assert ack == {"ok": True, "user_id": "kickme", "sockets": 4, "workers": 2, "errors": []}
    for client, namespaces in zip(targets, (["/chat"], ["/chat"], ["/chat", "/admin"]), strict=True):
        assert client.wait_event("kicked") == [{"reason": "spam"}]
        wait_for(lambda c=client, ns=namespaces: len(c.disconnects) == len(ns),
                 message="the kicked client to be disconnected from every namespace")
        assert sorted(ns for ns, _ in client.disconnects) == sorted(namespaces)
        assert {reason for _, reason in client.disconnects} == {"server disconnect"}
    # every worker queued its "kicked" events before answering the kick
    bystander.round_trip()
    assert bystander.of("kicked") == [] and bystander.sio.connected
    assert bystander.call("join", {"room": "still-here"})["ok"] is True


def test_admin_rooms_and_stats_count_every_process(cluster, connect):
    admin = connect(cluster[0].url, ["/admin"], user="root", role="admin")
    members = [connect(server.url, user=f"m{i}") for i, server in enumerate(cluster * 2)]
    for client in members:
        client.call("join", {"room": "counted"})
    members[0].call("join", {"room": "counted-2"})

    rooms = admin.call("rooms", {}, namespace="/admin")
    assert rooms["workers"] == 2 and rooms["errors"] == []
    counts = {entry["room"]: entry["members"] for entry in rooms["rooms"]}
    assert counts["counted"] == 4 and counts["counted-2"] == 1

    stats = admin.call("stats", {}, namespace="/admin")
    assert len(stats["workers"]) == 2 and stats["errors"] == []
    assert len({worker["pid"] for worker in stats["workers"]}) == 2
    assert stats["connections"]["/chat"] >= 4 and stats["connections"]["/admin"] >= 1
    assert stats["rooms"] >= 2
