"""History per room (Redis Streams, or memory without a queue), `join` with `since`,
GET /api/rooms/<room>/messages, and exactly-once sends with `client_id`."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
import requests

from app.core.history import parse_id


@pytest.fixture()
def room():
    return f"h-{uuid.uuid4().hex[:12]}"


def send(client, room, text, **extra):
    ack = client.call("message", {"room": room, "text": text, **extra})
    assert ack["ok"] is True, ack
    return ack["message"]


@pytest.mark.parametrize("queue", ["memory", "redis"])
def test_join_returns_recent_history_and_what_followed_since(queue, request, start_own_server,
                                                             connect, room):
    if queue == "memory":
        server = request.getfixturevalue("server")
    else:  # (a Redis of its own: a server on the session's would join `cluster`'s workers)
        server = start_own_server(MESSAGE_QUEUE_URL=request.getfixturevalue("private_redis").url)
    alice = connect(server.url, user="alice")
    alice.call("join", {"room": room})
    sent = [send(alice, room, f"m{n}") for n in range(3)]
    ids = [m["stream_id"] for m in sent]
    assert [parse_id(i) for i in ids] == sorted(parse_id(i) for i in ids)  # ordered

    bob = connect(server.url, user="bob")
    ack = bob.call("join", {"room": room})
    assert [m["text"] for m in ack["history"]] == ["m0", "m1", "m2"]
    assert ack["history"] == sent  # the same messages, ids and stream ids

    resumed = bob.call("join", {"room": room, "since": ids[0]})
    assert [m["text"] for m in resumed["history"]] == ["m1", "m2"]
    assert resumed["complete"] is True and resumed["more"] is False
    bad = bob.call("join", {"room": room, "since": "yesterday"})
    assert bad["error"]["code"] == "invalid_payload" and "since" in bad["error"]["details"]


def test_history_is_bounded_and_says_when_a_gap_is_too_old(start_own_server, connect, room):
    server = start_own_server(HISTORY_MAX_LENGTH="3", HISTORY_ON_JOIN="2")
    alice = connect(server.url, user="alice")
    alice.call("join", {"room": room})
    sent = [send(alice, room, f"m{n}") for n in range(5)]
    ack = alice.call("join", {"room": room})
    assert [m["text"] for m in ack["history"]] == ["m3", "m4"]
    # m1 and m2 were trimmed away: what followed m0 is no longer complete
    gap = alice.call("join", {"room": room, "since": sent[0]["stream_id"]})
    assert gap["complete"] is False and [m["text"] for m in gap["history"]] == ["m2", "m3"]
    assert gap["more"] is True


def test_history_is_shared_by_instances_and_readable_over_rest(cluster, connect, auth_header,
                                                               room):
    alice = connect(cluster[0].url, user="alice")
    alice.call("join", {"room": room})
    sent = [send(alice, room, f"m{n}") for n in range(4)]
    bob = connect(cluster[1].url, user="bob")
    assert [m["id"] for m in bob.call("join", {"room": room})["history"]] == \
        [m["id"] for m in sent]

    url = f"{cluster[1].url}/api/rooms/{room}/messages"
    page = requests.get(url, params={"after": sent[0]["stream_id"], "limit": 2},
                        headers=auth_header("bob"), timeout=10).json()
    assert [m["text"] for m in page["messages"]] == ["m1", "m2"] and page["more"] is True
    outsider = requests.get(url, headers=auth_header("outsider"), timeout=10)
    assert outsider.status_code == 403 and outsider.json()["error"]["code"] == "not_in_room"
    assert requests.get(url, params={"limit": "0"}, headers=auth_header("bob"),
                        timeout=10).status_code == 400


def test_a_python_client_catches_up_with_since_after_a_reconnect(cluster, connect, room):
    sender = connect(cluster[0].url, user="sender")
    sender.call("join", {"room": room})
    reader = connect(cluster[1].url, user="reader")
    reader.call("join", {"room": room})
    send(sender, room, "before")
    last = reader.wait_event("message")[-1]["stream_id"]
    reader.close()
    missed = [send(sender, room, f"missed {n}") for n in range(3)]

    again = connect(cluster[0].url, user="reader")  # another instance this time
    ack = again.call("join", {"room": room, "since": last})
    assert ack["complete"] is True
    assert [m["id"] for m in ack["history"]] == [m["id"] for m in missed]


def test_a_retried_message_is_answered_with_the_first_and_delivered_once(cluster, connect, room):
    sender = connect(cluster[0].url, user="sender")
    members = [connect(server.url, user=f"member{i}") for i, server in enumerate(cluster)]
    for client in (sender, *members):
        client.call("join", {"room": room})

    first = send(sender, room, "once", client_id="c-1")
    # a retry (on another instance, after a reconnect say) with the same client id
    retry_client = connect(cluster[1].url, user="sender")
    retry_client.call("join", {"room": room})
    again = send(retry_client, room, "once (retried)", client_id="c-1")
    assert again == first
    marker = send(sender, room, "after")  # every member has all that will ever come
    for member in members:
        member.wait_event("message", 2)
        member.round_trip()
        assert [m["id"] for m in member.of("message")] == [first["id"], marker["id"]]


def test_a_send_that_did_not_finish_is_sent_again_on_retry_and_only_once(
        private_redis, start_own_server, connect, room, settings):
    server = start_own_server(MESSAGE_QUEUE_URL=private_redis.url)
    sender = connect(server.url, user="sender")
    member = connect(server.url, user="member")
    for client in (sender, member):
        client.call("join", {"room": room})
    # as if a first attempt had stored its message, then its worker died before sending
    unfinished = {"id": uuid.uuid4().hex, "room": room, "text": "lost?", "client_id": "c-2",
                  "sender": {"id": "sender", "name": "sender"}, "ts": 1, "stream_id": "1-1"}
    redis.Redis(port=private_redis.port).set(
        f"{settings.message_queue_channel}:once:sender:c-2",
        json.dumps({"state": "pending", "message": unfinished}), px=60_000)

    assert send(sender, room, "lost?", client_id="c-2") == unfinished
    assert send(sender, room, "lost?", client_id="c-2") == unfinished
    marker = send(sender, room, "after")
    member.wait_event("message", 2)
    member.round_trip()
    assert [m["id"] for m in member.of("message")] == [unfinished["id"], marker["id"]]
