"""A partitioned queue (MESSAGE_QUEUE_PARTITIONS, app/core/queue/partitions.py) on a Redis
Cluster: each room's stream, ids, holders and channel are in its partition's slot, so
the rooms spread over the masters; history, exactly-once retries and recovery work
across partitions, and a master killed under traffic loses no acked message."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from app.core.chat import room_key
from app.core.queue.partitions import partition_channel, partition_of
from tests.helpers import traffic_through, wait_for
from tests.recovery.test_protocol import ack, connect_raw, cut, event

PARTITIONS = 3
# a deployment of its own on the shared cluster (the other cluster tests' servers, of one
# partition, are another: beside them, every publish here would be refused)
CHANNEL = "{parted}"


def partition(room: str) -> int:
    return partition_of(PARTITIONS, "/chat", room_key(room))


def channel_of(room: str) -> str:
    return partition_channel(CHANNEL, partition(room), PARTITIONS)


def one_room_per_partition() -> list[str]:
    found: dict[int, str] = {}
    while len(found) < PARTITIONS:
        name = f"p-{uuid.uuid4().hex[:10]}"
        found.setdefault(partition(name), name)
    return [found[index] for index in range(PARTITIONS)]


@pytest.fixture(scope="module")
def partitioned(redis_cluster, start_server):
    return [start_server(MESSAGE_QUEUE_URL=redis_cluster.url, MESSAGE_QUEUE_CHANNEL=CHANNEL,
                         MESSAGE_QUEUE_PARTITIONS=str(PARTITIONS)) for _ in range(2)]


def send(client, room, text, **extra):
    ack = client.call("message", {"room": room, "text": text, **extra})
    assert ack["ok"] is True, ack
    return ack["message"]


def test_rooms_live_in_their_partitions_slots_across_the_masters(redis_cluster, partitioned,
                                                                 connect, auth_header):
    first, second = partitioned
    rooms = one_room_per_partition()
    alice, bob = connect(first.url, user="alice"), connect(second.url, user="bob")
    tab = connect(second.url, user="alice")  # alice's other tab, on the other server
    for client in (alice, bob, tab):
        for room in rooms:
            client.call("join", {"room": room})

    for index, room in enumerate(rooms):
        sent = send(alice, room, f"to {room}")
        assert bob.wait_event("message", 2 * index + 1)[-1] == sent
        # a retry of a client_id, on the other server: answered with the first (its
        # record is read in the append, on the room's slot)
        once = send(alice, room, "once", client_id=f"c-{room}")
        assert bob.wait_event("message", 2 * index + 2)[-1] == once
        assert send(tab, room, "again", client_id=f"c-{room}")["id"] == once["id"]
        history = requests.get(f"{second.url}/api/rooms/{room}/messages",
                               headers=auth_header("alice"), timeout=10).json()["messages"]
        assert [m["text"] for m in history] == [f"to {room}", "once"]
    bob.round_trip()
    assert len(bob.of("message")) == 2 * len(rooms)  # the retries were not delivered again

    # each room's stream and holders are on the master of its partition's slot, and
    # both workers are subscribed there to its channel (sharded)
    masters = set()
    for room in rooms:
        channel = channel_of(room)
        owner = redis_cluster.owner(channel)
        masters.add(owner.port)
        client = owner.client()
        assert client.exists(f"{channel}:log:/chat:room:{room}") == 1
        assert client.scard(f"{channel}:room:/chat:room:{room}:holders") == 2
        counts = client.execute_command("PUBSUB", "SHARDNUMSUB", f"{channel}:room:/chat:room:{room}")
        assert counts[1] == 2
    assert len(masters) == PARTITIONS, "the partitions are not on a master each"


def test_a_socket_in_rooms_of_every_partition_is_recovered_on_the_other_server(
        partitioned, make_token, connect):
    first, second = partitioned
    rooms = one_room_per_partition()
    sender = connect(second.url, user="sender")
    ws, data = connect_raw(first, {"token": make_token("cut")})
    for room in rooms:
        sender.call("join", {"room": room})
        assert ack(ws, "join", {"room": room})["ok"] is True
    before = [send(sender, room, "before") for room in rooms]
    got = [event(ws) for _ in rooms]
    assert [args[1]["id"] for args in got] == [m["id"] for m in before]
    offset = got[-1][-1]
    assert len(offset.split(".")) == PARTITIONS, offset  # a position in each partition
    cut(ws)
    missed = {room: [send(sender, room, f"missed {n}") for n in range(2)] for room in rooms}

    again, restored = connect_raw(second, {"token": make_token("cut"), "pid": data["pid"],
                                           "offset": offset})
    assert restored["sid"] == data["sid"]
    replayed = [event(again) for _ in range(2 * len(rooms))]
    for room in rooms:  # each room's in its order, once; nothing it had
        assert [args[1]["id"] for args in replayed if args[1]["room"] == room] == [
            m["id"] for m in missed[room]]
    # the live ones follow, and its offset moved in the partition of each
    live = send(sender, rooms[0], "live")
    after = event(again)
    assert after[1]["id"] == live["id"]
    positions = after[-1].split(".")
    assert all(a >= b for a, b in zip(map(_key, positions), map(_key, offset.split(".")),
                                      strict=True))


def _key(stream_id: str) -> tuple[int, int]:
    ms, _, n = stream_id.partition("-")
    return int(ms), int(n)


def test_a_partitions_master_killed_and_restarted_under_traffic_loses_no_acked_message(
        start_own_server, connect):
    from tests.helpers import RedisClusterServer

    room = one_room_per_partition()[1]  # (not the first partition: its own queue)
    cluster = RedisClusterServer(masters=3).start()
    try:
        def kill_and_restart():
            owner = cluster.owner(channel_of(room))
            owner.stop()  # SIGKILL
            time.sleep(1)
            owner.start()

        acks = traffic_through(kill_and_restart, cluster.url, start_own_server, connect, room,
                               MESSAGE_QUEUE_CHANNEL=CHANNEL,
                               MESSAGE_QUEUE_PARTITIONS=str(PARTITIONS))
    finally:
        cluster.cleanup()
    assert any(not a["ok"] for a in acks), "the outage was not reported"


def test_the_other_partitions_rooms_go_on_while_one_master_is_down(start_own_server, connect):
    from tests.helpers import RedisClusterServer

    rooms = one_room_per_partition()
    cluster = RedisClusterServer(masters=3).start()
    try:
        servers = [start_own_server(MESSAGE_QUEUE_URL=cluster.url, MESSAGE_QUEUE_CHANNEL=CHANNEL,
                                    MESSAGE_QUEUE_PARTITIONS=str(PARTITIONS)) for _ in range(2)]
        alice, bob = connect(servers[0].url, user="alice"), connect(servers[1].url, user="bob")
        for client in (alice, bob):
            for room in rooms:
                client.call("join", {"room": room})
        down = cluster.owner(channel_of(rooms[1]))
        up = [room for room in rooms if cluster.owner(channel_of(room)) is not down
              and cluster.owner(CHANNEL) is not down]
        if not up:
            pytest.skip("every partition of this draw is on one master")
        down.stop()
        try:
            refused = alice.call("message", {"room": rooms[1], "text": "down"})
            assert refused["ok"] is False, refused
            assert refused["error"]["code"] in {"queue_unavailable", "delivery_incomplete"}
            for room in up:
                sent = send(alice, room, "still up")
                wait_for(lambda sent=sent: sent in bob.of("message"),
                         message="a message of a partition whose master is up")
        finally:
            down.start()
    finally:
        cluster.cleanup()


def test_workers_with_another_partition_count_make_publishes_refused(private_redis,
                                                                     start_own_server, connect):
    # (a rolling deploy that changed MESSAGE_QUEUE_PARTITIONS: each count keeps its rooms
    # under other keys and channels, so no publish may be judged ok across them)
    room = one_room_per_partition()[1]
    partitioned = start_own_server(MESSAGE_QUEUE_URL=private_redis.url,
                                   MESSAGE_QUEUE_PARTITIONS=str(PARTITIONS))
    sender = connect(partitioned.url, user="sender")
    sender.call("join", {"room": room})
    send(sender, room, "alone")
    single = start_own_server(MESSAGE_QUEUE_URL=private_redis.url, MESSAGE_QUEUE_PARTITIONS="1")

    def refused():
        ack = sender.call("message", {"room": room, "text": "mixed"})
        return not ack["ok"] and ack
    ack = wait_for(refused, message="a publish refused beside a worker of another count")
    assert "MESSAGE_QUEUE_PARTITIONS" in ack["error"]["message"], ack
    assert "another MESSAGE_QUEUE_PARTITIONS" in partitioned.log()
    single.stop()
    wait_for(lambda: sender.call("message", {"room": room, "text": "again"})["ok"],
             message="publishes ok once the other worker is gone")


def test_a_socket_in_one_room_is_recovered_though_the_other_partitions_are_quiet(
        partitioned, make_token, connect):
    # its offset lists every partition, the announcements' too (every socket is in
    # them): a quiet partition's position still moves (ticks), or the recovery could
    # not tell that nothing it missed there expired, and would start a fresh socket
    first, second = partitioned
    quiet = partition_of(PARTITIONS, "/chat", None)
    room = next(r for r in iter(lambda: f"q-{uuid.uuid4().hex[:10]}", None) if partition(r) != quiet)
    sender = connect(second.url, user="sender")
    sender.call("join", {"room": room})
    ws, data = connect_raw(first, {"token": make_token("quiet")})
    assert ack(ws, "join", {"room": room})["ok"] is True
    send(sender, room, "before")
    offset = event(ws)[-1]
    assert "0-0" not in offset.split("."), offset
    cut(ws)
    missed = send(sender, room, "missed")
    again, restored = connect_raw(second, {"token": make_token("quiet"), "pid": data["pid"],
                                           "offset": offset})
    assert restored["sid"] == data["sid"], "not recovered"
    assert event(again)[1]["id"] == missed["id"]
