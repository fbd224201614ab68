"""Floods and slow consumers: limited by settings, bounded, and nobody else is affected."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
import socketio
import websocket

from tests.helpers import (
    connected_raw,
    metric,
    raw_websocket,
    scrape_metrics,
    template_transport_only,
    wait_for,
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


def masked_frame(first_byte: int, payload: bytes = b"") -> bytes:
    """One client frame (payloads < 126 bytes), masked with a zero key: XOR is a no-op."""
    return bytes([first_byte, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def worker_rss_kb(server) -> int:
    total = 0
    for pid in server.worker_pids():
        status = Path(f"/proc/{pid}/status").read_text()
        total += int(status.split("VmRSS:")[1].split()[0])
    return total


# An unauthenticated client (no namespace connect) sending frames that never make a
# message: before each reached the reader's fair share, the worker froze for seconds
# and kept every PONG or empty fragment.
FRAME_FLOODS = {
    "pings": (b"", masked_frame(0x89, b"p" * 4)),
    "empty-continuations": (masked_frame(0x01, b"4"), masked_frame(0x00)),
}


@template_transport_only(FAIRNESS)
@pytest.mark.parametrize("flood", FRAME_FLOODS, ids=list(FRAME_FLOODS))
def test_a_flood_of_frames_that_make_no_message_does_not_stall_the_worker(
        start_own_server, make_token, flood):
    server = start_own_server()
    bystander = connected_raw(server, make_token("bystander"))
    flooder = raw_websocket(server)
    opening, frame = FRAME_FLOODS[flood]
    chunk = frame * (65536 // len(frame))
    flooder.sock.settimeout(0.5)
    flooder.sock.sendall(opening)
    rss_before = worker_rss_kb(server)
    stop, sent = threading.Event(), [0]

    def flood_frames() -> None:  # never reads: the replies are left to pile up
        while not stop.is_set():
            try:
                sent[0] += flooder.sock.send(chunk)
            except TimeoutError:
                continue  # the server stopped reading: keep trying
            except OSError:
                return  # the server closed the connection

    thread = threading.Thread(target=flood_frames, daemon=True)
    thread.start()
    latencies = []
    try:
        wait_for(lambda: sent[0] > 1_000_000, message="the flood to start")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            started = time.monotonic()
            bystander.send(f'42/chat,{len(latencies)}["join",{{"room":"calm"}}]')
            assert bystander.recv().startswith(f"43/chat,{len(latencies)}")
            latencies.append(time.monotonic() - started)
    finally:
        stop.set()
        thread.join(10)
        flooder.sock.close()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    growth_mb = (worker_rss_kb(server) - rss_before) / 1024
    assert p99 < 0.05, f"ack p99 {p99 * 1000:.0f} ms over {len(latencies)} acks"
    assert growth_mb < 10, f"worker grew {growth_mb:.1f} MB for {sent[0] / 1e6:.1f} MB sent"
    assert requests.get(server.url + "/api/health", timeout=5).ok
