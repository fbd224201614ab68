"""Exactly-once across workers: a send with a `client_id` that did not reach every worker
is answered `delivery_incomplete`, and its retry completes it without giving the message
twice to a member that had it, wherever that member has gone since.

An unreachable worker is made by hand: a member of the set of live workers, and a
holder of the rooms (app/core/queue/routes.py), that never subscribes, registered with a
score in the future so that it never expires. Every publish to those rooms then reaches
one worker fewer than expected, on every run, at any speed.
"""

from __future__ import annotations

import time
import uuid

import redis

from tests.helpers import wait_for

GHOST = "ghost-worker"


def test_a_retry_completes_a_partial_send_and_nobody_gets_it_twice(private_redis,
                                                                   start_own_server, connect,
                                                                   settings):
    env = {"MESSAGE_QUEUE_URL": private_redis.url}
    first, second = start_own_server(**env), start_own_server(**env)
    mover = connect(first.url, user="mover")
    sender, stayer = connect(second.url, user="sender"), connect(second.url, user="stayer")
    for client in (mover, sender, stayer):
        assert client.call("join", {"room": "once"})["ok"]
    assert sender.call("join", {"room": "probe"})["ok"]

    members = redis.Redis.from_url(private_redis.url)
    holders = [f"{settings.message_queue_channel}:room:/chat:room:{room}:holders"
               for room in ("once", "probe")]
    for key in holders:
        members.sadd(key, GHOST)
    members.zadd(f"{settings.message_queue_channel}:workers", {GHOST: int(time.time() * 1000) + 600_000})
    # (a room of the sender's own: until its worker has read the set, sends are ok)
    wait_for(lambda: not sender.call("message", {"room": "probe", "text": "?"})["ok"],
             message="the sender's worker to expect the ghost")
    send = {"room": "once", "text": "partial", "client_id": uuid.uuid4().hex}
    partial = sender.call("message", send)
    assert partial["error"]["code"] == "delivery_incomplete", partial
    # it went out: the members on both real workers have it
    (got,) = mover.wait_event("message")
    assert stayer.wait_event("message") == [got]

    # the mover goes to a worker started since (it never saw the message) and joins again
    third = start_own_server(**env)
    mover.close()
    moved = connect(third.url, user="mover")
    joined = moved.call("join", {"room": "once", "since": got["stream_id"]})
    assert joined["ok"] and joined["history"] == [], joined

    members.zrem(f"{settings.message_queue_channel}:workers", GHOST)
    for key in holders:
        members.srem(key, GHOST)
    # the retry, once every worker has forgotten the ghost: ok, with the first message
    retried = wait_for(lambda: (a := sender.call("message", send)) and a["ok"] and a,
                       timeout=30, message="the retry to be acked ok")
    assert retried["message"]["id"] == got["id"]
    assert retried["message"]["stream_id"] == got["stream_id"]

    # a barrier, then nobody has it twice: not the member that moved, not the one that stayed
    after = sender.call("message", {"room": "once", "text": "after", "client_id": "after-1"})
    assert after["ok"], after
    moved.wait_event("message")
    stayer.wait_event("message", count=2)
    assert [m["text"] for m in moved.of("message")] == ["after"]
    assert [m["text"] for m in stayer.of("message")] == ["partial", "after"]
    # and the log holds it once
    history = moved.call("join", {"room": "once"})["history"]
    assert [m["text"] for m in history].count("partial") == 1
