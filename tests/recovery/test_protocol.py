"""Connection-state recovery at the protocol level (raw Engine.IO WebSockets): who gets a
pid and offsets, and which reconnects are restored."""

from __future__ import annotations

import json
import socket
import uuid

import pytest

from tests.helpers import raw_websocket


def connect_raw(server, auth: dict):
    """(ws, CONNECT data) for /chat with `auth`."""
    ws = raw_websocket(server)
    ws.send("40/chat," + json.dumps(auth))
    reply = ws.recv()
    assert reply.startswith("40/chat,"), reply
    return ws, json.loads(reply[len("40/chat,"):])


def _frames(ws):
    """Engine.IO message frames (pings answered); events read early wait in ws.events."""
    while True:
        frame = ws.recv()
        if frame == "2":
            ws.send("3")
        else:
            yield frame


def event(ws, name: str = "message") -> list:
    """The next Socket.IO event `name` on /chat: [name, *args] (others are skipped)."""
    events = ws.__dict__.setdefault("events", [])
    while events:
        if (found := events.pop(0))[0] == name:
            return found
    for frame in _frames(ws):
        if frame.startswith("42/chat,") and (found := json.loads(frame[len("42/chat,"):]))[0] == name:
            return found


def ack(ws, name: str, payload: dict, ack_id: int = 1) -> dict:
    ws.send(f"42/chat,{ack_id}" + json.dumps([name, payload]))
    for frame in _frames(ws):
        if frame.startswith(f"43/chat,{ack_id}"):
            return json.loads(frame[len(f"43/chat,{ack_id}"):])[0]
        if frame.startswith("42/chat,"):
            ws.__dict__.setdefault("events", []).append(json.loads(frame[len("42/chat,"):]))


def cut(ws) -> None:
    """The TCP connection dies without a close handshake (a network cut)."""
    ws.sock.shutdown(socket.SHUT_RDWR)
    ws.sock.close()


@pytest.fixture()
def room():
    return f"p-{uuid.uuid4().hex[:12]}"


def test_recovery_is_offered_unless_the_client_opts_out(server, make_token, room):
    with_offsets, data = connect_raw(server, {"token": make_token("r1")})
    assert data["pid"] and data["sid"]
    without, data2 = connect_raw(server, {"token": make_token("r2"), "recovery": False})
    assert "pid" not in data2
    for ws in (with_offsets, without):
        assert ack(ws, "join", {"room": room})["ok"]
    sent = ack(with_offsets, "message", {"room": room, "text": "hi", "echo": True}, 2)
    stream_id = sent["message"]["stream_id"]
    assert event(with_offsets) == ["message", sent["message"], stream_id]
    assert event(without) == ["message", sent["message"]]


def test_only_the_same_user_within_the_window_recovers(server, make_token, room):
    ws, first = connect_raw(server, {"token": make_token("owner")})
    assert ack(ws, "join", {"room": room})["ok"]
    cut(ws)
    # another user with the stolen pid: a fresh session (not in the owner's rooms), and
    # the record is used up
    thief, data = connect_raw(server, {"token": make_token("thief"), "pid": first["pid"],
                                       "offset": "0-0"})
    assert data["pid"] != first["pid"]
    assert ack(thief, "message", {"room": room, "text": "in?"})["error"]["code"] == "not_in_room"
    again, data = connect_raw(server, {"token": make_token("owner"), "pid": first["pid"],
                                       "offset": "0-0"})
    assert data["pid"] != first["pid"]  # claimed once: not recovered
    for socket_ in (thief, again):
        socket_.close()


def test_a_recovered_socket_is_in_its_rooms_and_gets_what_it_missed(server, make_token, room):
    ws, first = connect_raw(server, {"token": make_token("back")})
    assert ack(ws, "join", {"room": room})["ok"]
    other, _ = connect_raw(server, {"token": make_token("other"), "recovery": False})
    assert ack(other, "join", {"room": room})["ok"]
    seen = ack(other, "message", {"room": room, "text": "seen"}, 2)["message"]
    assert event(ws)[2] == seen["stream_id"]
    cut(ws)
    missed = [ack(other, "message", {"room": room, "text": f"m{n}"}, 3 + n)["message"]
              for n in range(3)]
    back, data = connect_raw(server, {"token": make_token("back"), "pid": first["pid"],
                                      "offset": seen["stream_id"]})
    assert (data["sid"], data["pid"]) == (first["sid"], first["pid"])
    assert [event(back) for _ in missed] == [["message", m, m["stream_id"]] for m in missed]
    # in its room without a join: a message to the room reaches it
    live = ack(other, "message", {"room": room, "text": "live"}, 9)["message"]
    assert event(back) == ["message", live, live["stream_id"]]
    assert ack(back, "message", {"room": room, "text": "me"}, 1)["ok"]  # a member
    for socket_ in (back, other):
        socket_.close()


@pytest.mark.parametrize("queue_kind", ["memory", "redis"])
def test_a_replay_past_its_budget_is_not_recovered(queue_kind, start_own_server, private_redis,
                                                   make_token, room):
    """(One recovering connect read every room's whole log: 50 rooms x 1,000 entries x
    2,000 characters took 5 s and 252 MB.) Within RECOVERY_MAX_ENTRIES it recovers;
    past it, a fresh socket that re-joins with `since`."""
    queue = {"MESSAGE_QUEUE_URL": private_redis.url} if queue_kind == "redis" else {}
    server = start_own_server(RECOVERY_MAX_ENTRIES="3", **queue)
    other, _ = connect_raw(server, {"token": make_token("other"), "recovery": False})
    # another socket of the same user stays in the room: a cut is then no presence
    # `leave` (a room event too, logged whenever the server sees the cut)
    stays, _ = connect_raw(server, {"token": make_token("back"), "recovery": False})
    for client in (other, stays):
        assert ack(client, "join", {"room": room})["ok"]
    for missed, recovered in ((3, True), (4, False)):
        ws, first = connect_raw(server, {"token": make_token("back")})
        assert ack(ws, "join", {"room": room})["ok"]
        seen = ack(other, "message", {"room": room, "text": "seen"}, 2)["message"]
        assert event(ws)[2] == seen["stream_id"]
        cut(ws)
        for n in range(missed):
            assert ack(other, "message", {"room": room, "text": f"m{n}"}, 3 + n)["ok"]
        back, data = connect_raw(server, {"token": make_token("back"), "pid": first["pid"],
                                          "offset": seen["stream_id"]})
        assert (data["pid"] == first["pid"]) is recovered, (missed, data)  # (the client: `recovered`)
        if recovered:
            assert [event(back)[1]["text"] for _ in range(missed)] == ["m0", "m1", "m2"]
        back.close()


def test_a_socket_ended_by_the_server_or_the_client_is_not_recovered(server, make_token):
    ws, first = connect_raw(server, {"token": make_token("leaver")})
    ws.send("41/chat,")  # the client's own namespace disconnect: final
    ws.close()
    again, data = connect_raw(server, {"token": make_token("leaver"), "pid": first["pid"],
                                       "offset": "0-0"})
    assert data["pid"] != first["pid"]
    again.close()


@pytest.mark.parametrize("queue_kind", ["memory", "redis"])
def test_a_kicked_socket_is_not_recovered(queue_kind, server, cluster, connect, make_token):
    """(python-socketio's server-side disconnect never reached the recovery record: a
    kicked client came back into its rooms with its pid.)"""
    target = server if queue_kind == "memory" else cluster[0]
    ws, first = connect_raw(target, {"token": make_token("kickee")})
    admin = connect(target.url, ["/admin"], user="root", role="admin")
    kicked = admin.call("kick", {"user_id": "kickee"}, namespace="/admin")
    assert kicked["ok"] and kicked["sockets"] == 1, kicked
    assert event(ws, "kicked")
    again, data = connect_raw(target, {"token": make_token("kickee"), "pid": first["pid"],
                                       "offset": "0-0"})
    assert data["pid"] != first["pid"] and data["sid"] != first["sid"]
    again.close()


def test_a_recovering_client_still_needs_a_valid_token(server, make_token):
    ws, first = connect_raw(server, {"token": make_token("expiring")})
    cut(ws)
    ws2 = raw_websocket(server)
    ws2.send("40/chat," + json.dumps({"token": make_token("expiring", exp=1),
                                      "pid": first["pid"], "offset": "0-0"}))
    reply = ws2.recv()
    assert reply.startswith("44/chat,") and "token_expired" in reply, reply
    ws2.close()
