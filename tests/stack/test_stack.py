"""The compose topology, started natively: Redis, two app instances, nginx in front.

Same files as docker-compose.yml: the gunicorn config, the app, deploy/nginx/nginx.conf.
New WebSocket connections are balanced by least_conn; polling requests and upgrades
by ip_hash on the client address, which clients here choose with X-Forwarded-For
(nginx trusts it from 127.0.0.1).
"""

from __future__ import annotations

import os
import signal

import pytest
import requests

from tests.helpers import (
    Client,
    Nginx,
    RedisServer,
    ServerGroup,
    chat_connections_per_worker,
    wait_for,
)


@pytest.fixture(scope="module")
def stack():
    redis_server, servers, nginx = RedisServer(), ServerGroup(), None
    try:  # whatever fails to start, what did start is stopped
        redis_server.start()
        # ASYNCAPI_ACCESS as in production (APP_ENV=production needs real secrets)
        instances = [servers.start(MESSAGE_QUEUE_URL=redis_server.url, ASYNCAPI_ACCESS="admin")
                     for _ in range(2)]
        nginx = Nginx([f"127.0.0.1:{instance.port}" for instance in instances])
        yield {"redis": redis_server, "instances": instances, "nginx": nginx.start()}
    finally:
        if nginx is not None:
            nginx.stop()
        servers.stop_all()
        redis_server.cleanup()


def spread_clients(stack, connect, admin, transports, **options):
    """One client per transport on each instance, found by trying client addresses."""
    placed: dict[tuple[str, int], object] = {}
    for third_octet in range(1, 32):
        for transport in transports:
            before = chat_connections_per_worker(admin)
            client = connect(stack["nginx"].url, user=f"c{third_octet}", transport=transport,
                             headers={"X-Forwarded-For": f"10.0.{third_octet}.7"}, **options)
            after = wait_for(lambda b=before: (a := chat_connections_per_worker(admin)) != b and a)
            pid = next(pid for pid, count in after.items() if count > before.get(pid, 0))
            placed.setdefault((transport, pid), client)
        if len(placed) == 2 * len(transports):
            return placed
    raise AssertionError(f"clients did not reach both instances: {sorted(placed)}")


@pytest.fixture()
def admin(stack, connect):
    return connect(stack["instances"][0].url, ["/admin"], user="root", role="admin")


def test_rest_through_nginx(stack, auth_header):
    base = stack["nginx"].url
    assert requests.get(base + "/api/health", timeout=10).json() == {"status": "ok"}
    assert requests.get(base + "/api/ready", timeout=10).status_code == 200
    token = requests.post(base + "/api/auth/token", timeout=10,
                          json={"username": "bob", "password": "bob-password"})
    assert token.status_code == 200 and token.json()["user"]["id"] == "bob"
    missing = requests.get(base + "/api/nope", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    # /metrics is the app's (Prometheus scrapes each instance), never the proxy's public
    assert requests.get(stack["instances"][0].url + "/metrics", timeout=10).status_code == 200
    for path in ("/metrics", "/metrics?x=1"):
        hidden = requests.get(base + path, timeout=10)
        assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "not_found"
    # the event contract: an admin's, not the internet's
    contract = base + "/api/asyncapi.json"
    assert requests.get(contract, timeout=10).status_code == 401
    assert requests.get(contract, timeout=10, headers=auth_header("bob")).status_code == 403
    assert requests.get(contract, timeout=10, headers=auth_header("root", "admin")).ok


def test_polling_and_websocket_clients_share_rooms_across_instances(stack, connect, admin,
                                                                    auth_header):
    placed = spread_clients(stack, connect, admin, ["polling", "websocket"])
    assert len({pid for _, pid in placed}) == 2
    clients = list(placed.values())
    for client in clients:
        assert client.call("join", {"room": "stack"})["ok"] is True

    for sender in clients:
        sender.call("message", {"room": "stack", "text": f"from {sender.transport}"})
    response = requests.post(stack["nginx"].url + "/api/rooms/stack/messages", timeout=10,
                             json={"text": "from rest"}, headers=auth_header("rest", "admin"))
    assert response.status_code == 201

    for client in clients:  # every other client's message, plus the REST one
        wait_for(lambda c=client: len(c.of("message")) == len(clients),
                 message=f"{client.transport} client to receive every message")
        assert sorted(m["text"] for m in client.of("message")).count("from rest") == 1


def test_new_websocket_clients_from_one_address_spread_over_both_instances(
        stack, connect, admin):
    """least_conn for new WebSockets: one address (an office, a NAT) is not one instance."""
    before = chat_connections_per_worker(admin)
    # no X-Forwarded-For: every client is 127.0.0.1 to nginx
    clients = [connect(stack["nginx"].url, user=f"one-address-{i}") for i in range(6)]
    after = wait_for(lambda: (c := chat_connections_per_worker(admin))
                     and sum(c.values()) - sum(before.values()) == len(clients) and c,
                     message="every client to be counted")
    gained = {pid: count - before.get(pid, 0) for pid, count in after.items()}
    assert len(gained) == 2 and all(count > 0 for count in gained.values()), gained


def test_polling_requests_stay_on_one_instance_and_upgrade_to_websocket(
        stack, connect, make_token):
    """Every polling request and the upgrade carry the sid: ip_hash keeps them together.

    Were they balanced like new WebSockets, they would alternate between the two
    instances and the other one would answer "Invalid session".
    """
    url = stack["nginx"].url
    poller = connect(url, user="poller", transport="polling")
    for i in range(6):  # each call is a POST and a long-poll GET
        assert poller.call("join", {"room": f"poll-{i}"})["ok"] is True
    assert poller.sio.connected and poller.disconnects == []

    upgrader = Client()  # the default client: a polling handshake, then the upgrade
    upgrader.watch("/chat")
    try:
        upgrader.sio.connect(url, namespaces=["/chat"], auth={"token": make_token("upgrader")},
                             transports=["polling", "websocket"], wait_timeout=10)
        wait_for(lambda: upgrader.sio.transport() == "websocket", message="the upgrade")
        assert upgrader.call("join", {"room": "poll-0"})["ok"] is True
        sent = poller.call("message", {"room": "poll-0", "text": "to the upgraded"})["message"]
        upgrader.wait_event("message")
        assert upgrader.of("message") == [sent]
        assert upgrader.disconnects == []
    finally:
        upgrader.close()


def test_a_killed_worker_is_replaced_and_its_clients_reconnect_through_nginx(
        stack, connect, admin):
    placed = spread_clients(stack, connect, admin, ["websocket", "polling"], reconnection=True)
    (victim_pid,) = stack["instances"][1].worker_pids()  # not the admin's instance
    victims = [c for (_, pid), c in placed.items() if pid == victim_pid]
    others = [c for (_, pid), c in placed.items() if pid != victim_pid]
    for client in placed.values():
        client.call("join", {"room": "survivors"})

    os.kill(victim_pid, signal.SIGKILL)

    # the session each client last joined the room on (its count of connects before)
    joined = {client: 1 for client in placed.values()}

    def join(client) -> dict:
        before = len(client.connects)  # (a reconnect during the join: joined again later)
        ack = client.call_until_acked("join", {"room": "survivors"}, timeout=60)
        assert ack["ok"] is True, ack
        joined[client] = before
        return ack

    def bounced(client) -> bool:
        return len(client.connects) > joined[client]

    for client in victims:
        wait_for(lambda c=client: len(c.connects) >= 2 and c.sio.connected, timeout=30,
                 message=f"the {client.transport} client to reconnect "
                         f"({client.connects}, {client.disconnects}, {client.sio.connected})")
        join(client)
    stats = wait_for(lambda: (s := admin.call("stats", {}, namespace="/admin"))
                     and len(s["workers"]) == 2 and s)
    assert victim_pid not in {worker["pid"] for worker in stats["workers"]}
    sent = victims[0].send("survivors", "still here")  # refused while the dead one expires

    # A polling client that reconnected while nginx skipped the instance (2 s after the
    # kill's failed requests) has its session on the survivor, and ip_hash sends it back
    # when the instance is tried again, at any moment after: that session ends too
    # ("Invalid session") and the client reconnects once more as a new socket, out of the
    # room (docs/deployment.md, "nginx"). It joins again, as the README's client does on
    # every connect, and finds the message in the join's history.
    def delivered(client) -> bool:
        if sent in client.of("message"):
            return True
        return bounced(client) and client.sio.connected and sent in join(client)["history"]

    for client in others + victims[1:]:
        wait_for(lambda c=client: delivered(c), timeout=30, message=lambda c=client: (
            f"delivery after the restart to the {c.transport} client ({c.connects}, "
            f"{c.disconnects}, joined on connect {joined[c]})"))
    # and live deliveries to every client, the restarted worker's included, once no
    # session ends any more (a client that bounced again joins again, and it is resent)
    sender = others[0]
    receivers = [client for client in placed.values() if client is not sender]
    for attempt in range(5):
        live = sender.send("survivors", f"live {attempt}")
        wait_for(lambda m=live: all(m in c.of("message") or bounced(c) for c in receivers),
                 message=f"live delivery {attempt} after the restart")
        missed = [c for c in receivers if live not in c.of("message")]
        if not missed:
            break
        for client in missed:
            wait_for(lambda c=client: c.sio.connected, timeout=30, message="reconnected")
            join(client)
    else:
        raise AssertionError("a client kept losing its session")


def test_new_clients_reach_a_restarted_instance_within_seconds(stack, connect, admin):
    """With ip_hash for everything and nginx's passive failure marking, 599 of 600 new
    clients still went to the survivor 90 s after a restart (docs/deployment.md)."""
    url = stack["nginx"].url
    restarted = stack["instances"][1]  # not the admin's instance
    restarted.stop(signal.SIGKILL)
    # while it is down, nginx fails new clients over to the survivor
    during = [connect(url, user=f"during-{i}") for i in range(4)]
    assert all(client.sio.connected for client in during)

    restarted.start()
    (new_pid,) = restarted.worker_pids()

    def a_new_client_lands_on_the_restarted_instance():
        connect(url, user="after")
        return chat_connections_per_worker(admin).get(new_pid, 0) > 0

    # polled at 0.5 s: each attempt is one more client, kept open until the test ends
    wait_for(a_new_client_lands_on_the_restarted_instance, interval=0.5,
             message="a new client on the restarted instance")
