"""Floods and slow consumers: limited by settings, bounded, and nobody else is affected."""

from __future__ import annotations

import json
import select
import socket
import threading
import time

import pytest
import requests
import socketio
import websocket

from tests.helpers import (
    AckProbe,
    close_code,
    connected_raw,
    metric,
    raw_websocket,
    read_server_frames,
    scrape_metrics,
    template_transport_only,
    upgrade_by_hand,
    wait_for,
    worker_rss_kb,
    worker_sockets,
)

# python-engineio's reader never yields while a client keeps data coming (one such
# client stalls its whole worker), and queues a reply to every ping frame
FAIRNESS = "the reader's fair share, and PONGs bounded by the client's reading"


def test_connection_flood_from_one_address_is_limited(start_own_server, connect, refused,
                                                       make_token):
    server = start_own_server(MAX_CONNECTIONS_PER_ADDRESS="5")
    clients = [connect(server.url, user=f"f{i}") for i in range(5)]
    with pytest.raises(socketio.exceptions.ConnectionError):
        connect(server.url, user="one-too-many")
    assert "connection refused code=too_many_connections" in server.log()
    handshake = requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=10)
    assert handshake.status_code == 401
    assert handshake.json()["code"] == "too_many_connections"
    # X-Forwarded-For is not trusted without PROXY_HOPS: no way around the limit
    spoofed = requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=10,
                           headers={"X-Forwarded-For": "203.0.113.9"})
    assert spoofed.status_code == 401
    clients[0].close()
    wait_for(lambda: connect(server.url, user="after-one-left").sio.connected)


def test_addresses_behind_a_trusted_proxy_are_counted_apart(start_own_server):
    server = start_own_server(MAX_CONNECTIONS_PER_ADDRESS="2", PROXY_HOPS="1")

    def handshake(address):
        return requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=10,
                            headers={"X-Forwarded-For": address}).status_code

    assert [handshake("198.51.100.1") for _ in range(3)] == [200, 200, 401]
    assert handshake("198.51.100.2") == 200


def test_event_flood_is_rate_limited_and_others_are_unaffected(start_own_server, connect):
    server = start_own_server(EVENT_RATE="5", EVENT_BURST="10")
    flooder, alice, bob = (connect(server.url, user=name) for name in ("flood", "alice", "bob"))
    for client in (alice, bob):
        client.call("join", {"room": "calm"})

    acks = [flooder.call("join", {"room": "flood"}) for _ in range(40)]

    limited = [ack for ack in acks if not ack["ok"]]
    assert 20 <= len(limited) < 40
    assert {ack["error"]["code"] for ack in limited} == {"rate_limited"}
    assert all(0 < ack["error"]["details"]["retry_after"] <= 1 for ack in limited)
    sent = alice.call("message", {"room": "calm", "text": "unaffected"})
    assert sent["ok"] and bob.wait_event("message") == [sent["message"]]
    time.sleep(max(ack["error"]["details"]["retry_after"] for ack in limited))
    assert flooder.call("join", {"room": "flood"})["ok"] is True


def upgraded_raw(server, token: str, sockopt=()) -> websocket.WebSocket:
    """A raw WebSocket of a session opened over long-polling, connected to /chat, then
    upgraded (its HTTP connection closed)."""
    with requests.Session() as http:
        opened = http.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=10)
        sid = json.loads(opened.text[1:])["sid"]
        url = f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}"
        assert http.post(url, data="40/chat," + json.dumps({"token": token}), timeout=10).ok
        assert http.get(url, timeout=10).text.startswith("40/chat,")
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket&sid={sid}",
        timeout=10, sockopt=sockopt)
    ws.send("2probe")
    assert ws.recv() == "3probe"
    ws.send("5")
    return ws


@pytest.mark.parametrize("opened", [connected_raw, upgraded_raw], ids=["websocket", "upgraded"])
def test_a_client_that_stops_reading_is_disconnected(start_own_server, connect, make_token,
                                                      auth_header, opened):
    server = start_own_server(MAX_QUEUED_PACKETS="20", MAX_MESSAGE_LENGTH="60000",
                              EVENT_RATE="100000")  # REST posts as fast as they go
    watcher = connect(server.url, ["/admin"], user="root", role="admin")
    reader = connect(server.url, user="reader")
    reader.call("join", {"room": "firehose"})
    baseline = worker_sockets(server)
    # A raw client with a tiny receive buffer that joins a room, then never reads again.
    slow = opened(server, make_token("slow"),
                  sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    slow.send('42/chat,1["join",{"room":"firehose"}]')
    while (frame := slow.recv()) == "6":  # a NOOP, which ended the poll of an upgrade
        pass
    assert frame.startswith("43/chat,1")

    def chat_connections():
        return watcher.call("stats", {}, namespace="/admin")["connections"]["/chat"]

    assert chat_connections() == 2
    big = "x" * 50_000
    for n in range(400):  # ~20 MB for the slow client: far past any socket buffer
        response = requests.post(server.url + "/api/rooms/firehose/messages", timeout=10,
                                 json={"text": f"{n} {big}"}, headers=auth_header("poster", "admin"))
        assert response.status_code == 201
        if "slow consumer" in server.log():
            break
        # the reading client keeps up (a busy machine slowed it past MAX_QUEUED_PACKETS
        # once, and it was cut as well): only the one that never reads falls behind
        wait_for(lambda n=n: len(reader.of("message")) >= n - 4,
                 message=lambda n=n: f"the reader to keep up: {len(reader.of('message'))} of {n + 1}")
    wait_for(lambda: chat_connections() == 1, message="the slow client to be disconnected")
    assert "slow consumer" in server.log()
    assert metric(scrape_metrics(server), "realtime_slow_consumer_disconnects_total") == 1
    # ...and its connection is cut, with what was waiting for it (the client, which
    # reads nothing, cannot be what ends it)
    wait_for(lambda: worker_sockets(server) <= baseline, message="the slow client's socket to close")
    # the reading client got everything that was sent
    wait_for(lambda: len(reader.of("message")) == n + 1, message="the reader's messages")
    slow.close()


@template_transport_only(FAIRNESS)
def test_a_client_sending_nonstop_does_not_starve_the_others(start_own_server, connect,
                                                            make_token):
    server = start_own_server()
    flooder = connected_raw(server, make_token("flooder"))
    frame = '42/chat,["message",{"room":"noise","text":"' + "x" * 100 + '"}]'
    stop, sent = threading.Event(), [0]

    def flood() -> None:  # as fast as the socket takes them, never waiting for a reply
        while not stop.is_set():
            try:
                flooder.send(frame)
            except (OSError, websocket.WebSocketException):
                return
            sent[0] += 1

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        wait_for(lambda: sent[0] > 1000, message="the flood to start")
        # the reader of a nonstop sender never has to wait for data: it must still let
        # the worker serve a new connection and its events
        bystander = connect(server.url, user="bystander")
        for _ in range(5):
            assert bystander.call("join", {"room": "calm"})["ok"] is True
        during = sent[0]
        wait_for(lambda: sent[0] > during + 1000, message="the flood to go on meanwhile")
    finally:
        stop.set()
        thread.join(10)
        flooder.close()


# --- attacks on the WebSocket transport ------------------------------------------
# Each runs against a server of its own while a second client (AckProbe) keeps
# sending an event with an ack: its ack p99 must stay under 50 ms (none over 1 s)
# and the worker's RSS, sampled during the attack, must not grow by 10 MB.


def masked_frame(first_byte: int, payload: bytes = b"") -> bytes:
    """One client frame (payloads < 126 bytes), masked with a zero key: XOR is a no-op."""
    return bytes([first_byte, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def frame_flood(opening: bytes, frame: bytes, cut: bool):
    """An unauthenticated client (no namespace connect) sending `frame` nonstop after
    `opening`, and never reading: the replies are left to pile up. `cut`: the server
    must end the connection (a bound fired); otherwise the traffic is legal."""

    def attack(server, make_token, sample) -> None:
        # a small receive buffer: the kernel's could take a few MB of replies
        flooder = raw_websocket(server, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
        chunk = frame * (65536 // len(frame))
        flooder.sock.settimeout(0.5)
        flooder.sock.sendall(opening)
        stop, ended, sent = threading.Event(), threading.Event(), [0]

        def flood_frames() -> None:
            while not stop.is_set():
                try:
                    sent[0] += flooder.sock.send(chunk)
                except TimeoutError:
                    continue  # the server stopped reading: keep trying
                except OSError:
                    ended.set()  # the server closed the connection
                    return

        thread = threading.Thread(target=flood_frames, daemon=True)
        thread.start()
        try:
            wait_for(lambda: sent[0] > 1_000_000 or ended.is_set(), message="the flood to start")
            deadline = time.monotonic() + 3  # the flood's length
            while time.monotonic() < deadline:
                sample()
                stop.wait(0.05)
        finally:
            stop.set()
            thread.join(10)
            flooder.sock.close()
        assert ended.is_set() == cut, f"cut: {ended.is_set()} after {sent[0] / 1e6:.1f} MB"

    return attack


def readable(sock: socket.socket) -> bool:
    """Data or an end of stream waits on `sock` (now: no waiting)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def polling_session(server, http: requests.Session) -> str:
    opened = http.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=10)
    assert opened.status_code == 200, opened.text
    return json.loads(opened.text[1:])["sid"]


def upgrade(server, sid: str) -> tuple[socket.socket, bytes]:
    """An upgrade of polling session `sid` to WebSocket, never followed by its probe:
    the socket, and the server's status line."""
    sock, status, _ = upgrade_by_hand(server, f"EIO=4&transport=websocket&sid={sid}")
    return sock, status


def stalled_upgrades_from_one_session(server, make_token, sample) -> None:
    """One polling session, 600 upgrades without a probe: one at a time is held (each
    held one is a connection and a green thread that its address limit never counts)."""
    http = requests.Session()
    sid = polling_session(server, http)
    first, status = upgrade(server, sid)
    assert status == b"HTTP/1.1 101 Switching Protocols"
    accepted = []  # refused after accept() (a race with the first): closed with 1008
    for n in range(600):
        sock, status = upgrade(server, sid)
        if status.startswith(b"HTTP/1.1 101"):
            accepted.append(sock)
        else:
            assert status.startswith(b"HTTP/1.1 400"), status
            sock.close()
        if n % 25 == 0:
            sample()
    try:
        wait_for(lambda: all(readable(sock) for sock in accepted),
                 message=f"the server to close the {len(accepted)} extra upgrades")
        assert not readable(first)  # still waiting for its probe
        # the session ends (an Engine.IO close): its upgrade ends with it
        http.post(f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}", data="1",
                  timeout=10)
        wait_for(lambda: readable(first), message="the upgrade to end with its session")
    finally:
        for sock in (first, *accepted):
            sock.close()


def stalled_upgrades_from_many_sessions(server, make_token, sample) -> None:
    """1500 polling sessions each start an upgrade and never send its probe, then end:
    MAX_CONNECTIONS_PER_ADDRESS counts sessions, so an upgrade must not outlive its own
    (it did, until its deadline: PING_TIMEOUT, 20 s here), and the deadline's task must
    not outlive the upgrade (it slept out the 20 s, holding the connection's objects)."""
    http = requests.Session()
    held = []  # the upgrades the server has not cut yet
    try:
        for n in range(1500):
            sid = polling_session(server, http)
            sock, status = upgrade(server, sid)
            assert status == b"HTTP/1.1 101 Switching Protocols"
            held.append(sock)
            ended = http.post(f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}",
                              data="1", timeout=10)  # an Engine.IO close
            assert ended.status_code == 200
            if n % 25 == 0:
                sample()
                for cut in [sock for sock in held if readable(sock)]:
                    cut.close()
                    held.remove(cut)
        wait_for(lambda: all(readable(sock) for sock in held),
                 message="every upgrade to end with its session")
    finally:
        for sock in held:
            sock.close()


def close_while_a_backlog_is_written(server, make_token, sample) -> None:
    """A client with a small receive buffer joins a room, ~4 MB is posted to it (more
    than the kernel's buffers take: ~2.8 MB on loopback), and its Close arrives while
    the server is still writing that backlog: the answer comes after the backlog, in
    whole frames (it was once written into a data frame)."""
    poster = {"Authorization": f"Bearer {make_token('poster', 'admin')}"}
    for cycle in range(4):
        ws = connected_raw(server, make_token(f"closer-{cycle}"),
                           sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
        ws.send('42/chat,1["join",{"room":"backlog"}]')
        assert ws.recv().startswith("43/chat,1")
        count = 60
        for n in range(count):
            response = requests.post(server.url + "/api/rooms/backlog/messages", timeout=10,
                                     json={"text": f"{n}:" + "x" * 65_000}, headers=poster)
            assert response.status_code == 201, response.text
        sample()
        ws.send_close(1000, b"bye")
        frames = read_server_frames(ws.sock)
        ws.sock.close()
        events = [json.loads(data[len(b"42/chat,"):]) for opcode, data in frames
                  if opcode == 0x1 and data.startswith(b"42/chat,")]
        texts = [payload["text"] for name, payload in events if name == "message"]
        assert [int(text.split(":")[0]) for text in texts] == list(range(count))
        assert frames[-1] == (0x8, (1000).to_bytes(2, "big"))
        sample()


# name: (the server's settings, the attack)
ATTACKS = {
    # small pings: their PONGs fit in the kernel's buffers, the reader never waits
    # for its writer, and must still let the worker serve others
    "ping-flood": ({}, frame_flood(b"", masked_frame(0x89, b"p" * 4), cut=False)),
    # the largest pings, whose PONGs fill the kernel's buffers in a moment: then they
    # must wait in the client's socket, not in the worker (which would end the flooder
    # as a slow consumer, at MAX_QUEUED_BYTES)
    "large-ping-flood": ({}, frame_flood(b"", masked_frame(0x89, b"p" * 125), cut=False)),
    # one message that never ends: cut at MAX_FRAGMENTS, its bytes allowing no more (1009)
    "empty-continuation-flood": (
        {}, frame_flood(masked_frame(0x01, b"4"), masked_frame(0x00), cut=True)),
    # messages of 1024 fragments (the most allowed) one after the other: legal, and
    # endless; each is an Engine.IO NOOP
    "fragmented-message-flood": (
        {}, frame_flood(b"", masked_frame(0x01, b"6") + masked_frame(0x00) * 1022
                        + masked_frame(0x80), cut=False)),
    "stalled-upgrades-one-session": ({}, stalled_upgrades_from_one_session),
    "stalled-upgrades-many-sessions": ({}, stalled_upgrades_from_many_sessions),
    "close-during-backlog": (
        # no history: the posted messages would stay in the worker's memory
        {"MAX_MESSAGE_LENGTH": "70000", "EVENT_RATE": "100000", "HISTORY_MAX_LENGTH": "0",
         "MAX_QUEUED_BYTES": "50000000"},
        close_while_a_backlog_is_written),
}


@template_transport_only(FAIRNESS)
@pytest.mark.parametrize("attack", ATTACKS)
def test_an_attack_on_the_transport_leaves_others_fast_and_the_worker_small(
        start_own_server, make_token, attack):
    env, run = ATTACKS[attack]
    server = start_own_server(**env)
    with AckProbe(server, make_token("bystander")) as probe:
        baseline = worker_rss_kb(server)
        samples = [baseline]
        run(server, make_token, lambda: samples.append(worker_rss_kb(server)))
        samples.append(worker_rss_kb(server))
    growth_mb = (max(samples) - baseline) / 1024
    summary = probe.assert_fast()
    assert growth_mb < 10, f"the worker grew {growth_mb:.1f} MB ({summary})"
    assert requests.get(server.url + "/api/health", timeout=5).ok
    print(f"{attack}: {summary}, RSS +{growth_mb:.1f} MB")


@template_transport_only("the template's writer and reader, freed without the cyclic GC")
def test_connections_that_ended_leave_no_memory_behind(start_own_server):
    """Each finished WebSocket left its objects in reference cycles (its writer and
    its WebSocket point at each other; a protocol error's traceback holds the
    session's frame): ~4 KB, or ~14 KB after an error, waited for the cyclic GC, which
    the worker's GC_GEN0_THRESHOLD makes rare: a client opening and breaking
    connections grew the worker by 7-9 MB, up to a full collection."""
    server = start_own_server()

    def churn(count: int) -> None:
        for n in range(count):
            ws = raw_websocket(server)
            if n % 2:
                ws.sock.sendall(masked_frame(0x83))  # an unknown opcode
            else:
                ws.send_close()
            assert close_code(ws) == (1002 if n % 2 else 1000)
            ws.sock.close()

    churn(100)  # what the first connections allocate for good
    before = worker_rss_kb(server)
    churn(1000)
    growth_mb = (worker_rss_kb(server) - before) / 1024
    assert growth_mb < 2, f"1000 connections that ended grew the worker by {growth_mb:.1f} MB"
