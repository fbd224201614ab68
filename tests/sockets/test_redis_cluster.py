"""The message queue on a Redis Cluster (MESSAGE_QUEUE_URL=redis+cluster://): two servers
share emits, history, recovery and the control bus through the master of one slot, and
follow it when it is restarted or fails over, losing no acked message."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.adapters.redis_cluster import SlotOwner, cluster_client, slot_owner
from tests.helpers import traffic_through, wait_for

CHANNEL = "{realtime}"  # the default channel, wrapped in a hash tag on a cluster


@pytest.fixture(scope="module")
def on_cluster(redis_cluster, start_server):
    return [start_server(MESSAGE_QUEUE_URL=redis_cluster.url) for _ in range(2)]


@pytest.fixture()
def room():
    return f"c-{uuid.uuid4().hex[:12]}"


def send(client, room, text):
    ack = client.call("message", {"room": room, "text": text})
    assert ack["ok"] is True, ack
    return ack["message"]


def test_two_servers_share_emits_and_history_through_one_slot(redis_cluster, on_cluster, connect,
                                                              auth_header, room):
    first, second = on_cluster
    alice = connect(first.url, user="alice")
    bob = connect(second.url, user="bob")
    for client in (alice, bob):
        client.call("join", {"room": room})

    sent = send(alice, room, "across")
    assert bob.wait_event("message") == [sent]
    response = requests.post(f"{second.url}/api/rooms/{room}/messages", json={"text": "rest"},
                             headers=auth_header("carol", "admin"), timeout=10)
    assert response.status_code == 201
    assert alice.wait_event("message") == [response.json()["message"]]
    joined = connect(second.url, user="dave").call("join", {"room": room, "since": sent["stream_id"]})
    assert [m["text"] for m in joined["history"]] == ["rest"] and joined["complete"] is True

    # every key of the queue is on the master of the channel's slot, none elsewhere, and
    # its channels are sharded: both workers subscribed there (none classic)
    owner = redis_cluster.owner(CHANNEL)
    counts = owner.client().execute_command("PUBSUB", "SHARDNUMSUB", CHANNEL,
                                            f"{CHANNEL}:room:/chat:room:{room}")
    assert counts[1::2] == [2, 2] and owner.client().pubsub_numsub(CHANNEL)[0][1] == 0
    keys = owner.client().keys("*")
    assert keys and all(key.startswith(CHANNEL.encode()) for key in keys)
    others = [n for n in redis_cluster.nodes if n is not owner]
    assert [n.client().dbsize() for n in others] == [0] * len(others)


def test_presence_idempotency_and_limits_hold_across_servers_on_a_cluster(on_cluster, connect,
                                                                         room):
    observer = connect(on_cluster[1].url, user="observer")
    observer.call("join", {"room": room})
    tabs = [connect(server.url, user="alice") for server in on_cluster]  # two tabs
    acks = [tab.call("join", {"room": room}) for tab in tabs]
    assert {"id": "alice", "name": "alice", "sockets": 2} in acks[1]["presence"]

    once = tabs[0].call("message", {"room": room, "text": "once", "client_id": "c-1"})["message"]
    again = tabs[1].call("message", {"room": room, "text": "again", "client_id": "c-1"})
    assert again["message"] == once  # the retry, on the other server, answered with the first
    marker = send(tabs[0], room, "after")
    observer.wait_event("message", 2)
    observer.round_trip()
    assert [m["id"] for m in observer.of("message")] == [once["id"], marker["id"]]

    # failed logins count across servers (5 per user), in the cluster
    url = [f"{server.url}/api/auth/token" for server in on_cluster]
    statuses = [requests.post(url[n % 2], json={"username": "alice", "password": "wrong"},
                              timeout=10).status_code for n in range(6)]
    assert statuses == [401] * 5 + [429]


def test_the_control_bus_reaches_every_worker_on_a_cluster(on_cluster, connect):
    first, second = on_cluster
    admin = connect(first.url, namespaces=["/admin"], user="root", role="admin")
    stats = admin.call("stats", {}, namespace="/admin")
    assert len(stats["workers"]) == 2, stats  # one answer per server, through the bus
    target = connect(second.url, user="kicked")
    kicked = admin.call("kick", {"user_id": "kicked", "ban_seconds": 60}, namespace="/admin")
    assert kicked["ok"] is True and kicked["sockets"] == 1 and kicked["workers"] == 2, kicked
    wait_for(lambda: target.disconnects, message="the kicked user's socket ended")


def test_a_cut_socket_is_recovered_on_the_other_server(on_cluster, make_token, connect, room):
    from tests.recovery.test_protocol import ack, connect_raw, cut, event

    first, second = on_cluster
    sender = connect(second.url, user="sender")
    sender.call("join", {"room": room})
    ws, data = connect_raw(first, {"token": make_token("cut")})
    assert ack(ws, "join", {"room": room})["ok"] is True
    before = send(sender, room, "before")
    offset = event(ws)[-1]
    assert offset == before["stream_id"]
    cut(ws)
    missed = [send(sender, room, f"missed {n}") for n in range(3)]

    again, restored = connect_raw(second, {"token": make_token("cut"), "pid": data["pid"],
                                           "offset": offset})
    assert restored["sid"] == data["sid"]
    assert [event(again)[1]["text"] for _ in missed] == [m["text"] for m in missed]


def test_a_master_killed_and_restarted_under_traffic_loses_no_acked_message(
        start_own_server, connect, room):
    from tests.helpers import RedisClusterServer

    cluster = RedisClusterServer(masters=3).start()
    try:
        def kill_and_restart(owner):
            owner.stop()  # SIGKILL
            time.sleep(1)
            owner.start()

        acks = traffic_through(lambda: kill_and_restart(cluster.owner(CHANNEL)), cluster.url,
                               start_own_server, connect, room)
    finally:
        cluster.cleanup()
    assert any(not a["ok"] for a in acks), "the outage was not reported"


def test_a_failover_under_traffic_loses_no_acked_message(private_redis_cluster, start_own_server,
                                                        connect, room):
    cluster = private_redis_cluster

    def fail_over(owner):
        replica = cluster.replica_of(owner)
        replica.client().execute_command("CLUSTER", "FAILOVER")
        wait_for(lambda: cluster.owner(CHANNEL) is replica, message="the replica promoted")

    traffic_through(lambda: fail_over(cluster.owner(CHANNEL)), cluster.url, start_own_server,
                    connect, room)
    # the workers follow the new master: their subscriptions are there, none on the old
    new = cluster.owner(CHANNEL)
    wait_for(lambda: new.client().execute_command("PUBSUB", "SHARDNUMSUB", CHANNEL)[1] == 2,
             message="both workers subscribed on the new master")


# --- the adapter (app/adapters/redis_cluster.py) -----------------------------
def test_the_slot_owner_is_asked_of_any_node_and_a_moved_reply_asks_again(redis_cluster):
    owner = slot_owner(redis_cluster.url, CHANNEL)
    expected = redis_cluster.owner(CHANNEL)
    assert owner.address() == ("127.0.0.1", expected.port)
    assert len(owner.nodes) == 3  # the two seeds, and the master they named
    other = next(n for n in redis_cluster.nodes if n is not expected)

    client = cluster_client(owner, socket_connect_timeout=2,
                            retry=Retry(NoBackoff(), 0))
    owner._address = ("127.0.0.1", other.port)  # as if the slot had moved since
    with pytest.raises(redis.ConnectionError, match="not served by"):
        client.set(CHANNEL + ":probe", 1)  # MOVED: the command did not run
    assert owner.known is None  # forgotten, and asked again at the next connect
    assert client.set(CHANNEL + ":probe", 1) and owner.address() == ("127.0.0.1", expected.port)

    # redis-py's own retry reconnects through the adapter too: to the slot's master
    retrying = cluster_client(owner, socket_connect_timeout=2,
                              retry=Retry(NoBackoff(), 1))
    owner._address = ("127.0.0.1", other.port)  # moved again
    pipe = retrying.pipeline(transaction=False)
    pipe.incr(CHANNEL + ":probe")
    pipe.get(CHANNEL + ":probe")
    assert pipe.execute() == [2, b"2"]  # once, on the master, after one MOVED
    client.delete(CHANNEL + ":probe")


def test_a_connection_to_a_new_master_closes_those_to_the_old_one(redis_cluster):
    expected = redis_cluster.owner(CHANNEL)
    other = next(n for n in redis_cluster.nodes if n is not expected)
    owner = SlotOwner([("127.0.0.1", other.port)], 0)
    owner._address = ("127.0.0.1", other.port)
    stale = cluster_client(owner, socket_connect_timeout=2).pubsub()
    stale.subscribe("anything")
    owner._address = ("127.0.0.1", expected.port)
    cluster_client(owner, socket_connect_timeout=2).ping()
    sock = stale.connection._sock
    sock.settimeout(5)
    while sock.recv(4096):  # (its subscription's confirmation, then) the end: shut down
        pass
