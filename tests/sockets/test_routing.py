"""Routed fan-out (app/core/queue/routes.py): a worker reads only the messages of the
rooms it holds members of, plus the shared channel."""

from __future__ import annotations

import redis

from app.core.queue.routes import ROUTE_LINGER
from tests.helpers import metric, scrape_metrics, wait_for


def received(server) -> float:
    """Messages the server's (one) worker read from Redis (the scrape flushes its count)."""
    return metric(scrape_metrics(server), "realtime_queue_received_total")


def test_a_worker_reads_only_the_rooms_it_holds(cluster, connect, redis_server, settings):
    first, second = cluster
    channel = f"{settings.message_queue_channel}:room:/chat:room:"
    rooms = ("only-first", "only-second", "on-both")
    r = redis.Redis.from_url(redis_server.url)
    alice = connect(first.url, user="alice")
    bob = connect(second.url, user="bob")
    alice.call("join", {"room": "only-first"})
    bob.call("join", {"room": "only-second"})
    for client in (alice, bob):
        client.call("join", {"room": "on-both"})
    # one subscription per room per holding worker, and the holders registered
    assert [count for _, count in r.pubsub_numsub(*(channel + room for room in rooms))] == [
        1, 1, 2]
    assert [r.scard(channel + room + ":holders") for room in rooms] == [1, 1, 2]
    # bob's own message back: the second worker has read everything before it
    bob.call("message", {"room": "on-both", "text": "settled", "echo": True})
    bob.wait_event("message")
    before = received(second)

    for i in range(20):
        alice.call("message", {"room": "only-first", "text": f"m{i}"})
    fence = alice.call("message", {"room": "on-both", "text": "fence"})["message"]

    assert fence in bob.wait_event("message", 2)
    # (one subscription, in order: had it read the other room's messages, it would
    # have read them before the fence)
    assert received(second) == before + 1


def test_a_room_left_is_unsubscribed_after_the_linger(cluster, connect, redis_server, settings):
    first, _ = cluster
    channel = f"{settings.message_queue_channel}:room:/chat:room:brief"
    r = redis.Redis.from_url(redis_server.url)
    alice = connect(first.url, user="alice")
    alice.call("join", {"room": "brief"})
    assert r.pubsub_numsub(channel)[0][1] == 1 and r.scard(channel + ":holders") == 1

    alice.call("leave", {"room": "brief"})
    alice.call("join", {"room": "brief"})  # back within the linger: nothing changed
    alice.call("leave", {"room": "brief"})

    wait_for(lambda: r.scard(channel + ":holders") == 0, timeout=ROUTE_LINGER + 5,
             message="the holder removed")
    wait_for(lambda: r.pubsub_numsub(channel)[0][1] == 0, message="unsubscribed")
    alice.call("join", {"room": "brief"})  # and subscribed again
    assert r.pubsub_numsub(channel)[0][1] == 1 and r.scard(channel + ":holders") == 1
