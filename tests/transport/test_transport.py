"""The WebSocket transport (app/transport/engine.py) against a real server and raw clients."""

from __future__ import annotations

import json
import socket
import time

import requests
import socketio
import websocket
from engineio.socket import Socket

from app.transport.engine import EngineServer, Session
from tests.helpers import (
    close_code,
    connected_raw,
    poll_answer,
    read_server_frames,
    send_poll,
    stock_deviation,
    template_transport_only,
    wait_for,
    worker_rss_kb,
    worker_sockets,
)


@stock_deviation("its gevent WebSocket (simple-websocket) writes with send(), not sendall(): "
                 "a partial write to a client that reads slowly loses the rest of the frame",
                 async_mode="gevent")
def test_a_reader_that_pauses_gets_every_message_in_order(start_own_server, make_token,
                                                          auth_header):
    server = start_own_server(MAX_QUEUED_PACKETS="100000", MAX_MESSAGE_LENGTH="70000",
                              MAX_HTTP_BUFFER_SIZE="200000", EVENT_RATE="100000",
                              MAX_QUEUED_BYTES="50000000")
    ws = connected_raw(server, make_token("paused"),
                       sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    ws.send('42/chat,1["join",{"room":"backlog"}]')
    assert ws.recv().startswith("43/chat,1")
    # Sizes cross the frame header's three length forms (7, 16 and 64 bits); the
    # client does not read until all are accepted, ~5 MB: far past the socket buffers,
    # so most of them wait in the server's backlog.
    sizes = [5, 125, 126, 200, 65_535, 65_536, 69_000, 40_000]
    count = 120
    for n in range(count):
        text = f"{n}:" + "x" * sizes[n % len(sizes)]
        response = requests.post(server.url + "/api/rooms/backlog/messages", timeout=10,
                                 json={"text": text}, headers=auth_header("poster", "admin"))
        assert response.status_code == 201, response.text
    received = []
    while len(received) < count:
        frame = ws.recv()
        if frame == "2":  # an Engine.IO ping
            ws.send("3")
            continue
        event, message = json.loads(frame[len("42/chat,"):])[:2]  # (then its offset)
        assert event == "message"
        received.append(message["text"])
    assert [int(text.split(":")[0]) for text in received] == list(range(count))
    assert [len(text.split(":")[1]) for text in received] == \
        [sizes[n % len(sizes)] for n in range(count)]
    ws.close()


def test_pings_keep_a_client_and_a_silent_one_is_dropped(start_own_server, make_token,
                                                         connect):
    server = start_own_server(PING_INTERVAL="1", PING_TIMEOUT="1")
    admin = connect(server.url, ["/admin"], user="root", role="admin")

    def chat_connections() -> int:
        return admin.call("stats", {}, namespace="/admin")["connections"].get("/chat", 0)

    baseline = worker_sockets(server)
    ws = connected_raw(server, make_token("pinged"))
    assert chat_connections() == 1 and worker_sockets(server) == baseline + 1
    assert ws.engineio_open["pingInterval"] == 1000 and ws.engineio_open["pingTimeout"] == 1000
    started = time.monotonic()
    for _ in range(3):  # answered pings: the session lives on past several intervals
        assert ws.recv() == "2"
        ws.send("3")
    assert time.monotonic() - started > 2
    ws.send('42/chat,1["join",{"room":"alive"}]')
    assert ws.recv().startswith("43/chat,1")
    assert ws.recv() == "2"  # now silent (reads nothing more): the server ends the session
    silent_since = time.monotonic()
    # ...its socket closed too (the connection's green thread is not left parked on a
    # read waiting for a close handshake this client will never answer). Polled from
    # /proc, not /admin: polling an event would hit the per-socket rate limit.
    wait_for(lambda: worker_sockets(server) == baseline, timeout=10,
             message="the session's socket to end on the server")
    # ended by the ping timeout (interval + timeout = 2 s), not by anything slower
    assert time.monotonic() - silent_since < 8
    assert chat_connections() == 0

    def closed() -> bool:
        try:
            return ws.recv() in ("", None, "1")  # "1": Engine.IO CLOSE
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
            return True

    wait_for(closed, timeout=10, message="the client to see the close")


def test_a_polling_client_upgrades_without_losing_or_reordering(server, make_token, connect):
    client = socketio.Client()
    received = []
    client.on("message", lambda message: received.append(message["text"]), namespace="/chat")
    client.connect(server.url, namespaces=["/chat"],
                   auth={"token": make_token("upgrader"), "recovery": False},
                   transports=["polling", "websocket"], wait_timeout=10)
    try:
        assert client.call("join", {"room": "upgrading"}, namespace="/chat")["ok"] is True
        sender = connect(server.url, user="sender")
        sender.call("join", {"room": "upgrading"})
        # a burst around the upgrade (within EVENT_BURST): packets queued on the polling
        # side must be written on the WebSocket first, in order
        for n in range(30):
            sender.sio.emit("message", {"room": "upgrading", "text": str(n)}, namespace="/chat")
        wait_for(lambda: client.transport() == "websocket", message="the upgrade")
        wait_for(lambda: len(received) >= 30, message="the burst")
        assert received == [str(n) for n in range(30)]
        sender.call("message", {"room": "upgrading", "text": "after"})
        wait_for(lambda: received[-1:] == ["after"], message="a message after the upgrade")
    finally:
        client.shutdown()


@stock_deviation("the upgrade's NOOP is also written on the new WebSocket")
def test_the_upgrade_noop_goes_to_a_waiting_poll_only(server, make_token):
    def upgrade(sid: str) -> websocket.WebSocket:
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket&sid={sid}",
            timeout=10)
        ws.send("2probe")
        assert ws.recv() == "3probe"
        ws.send("5")
        return ws

    def open_session() -> tuple[str, str]:
        opened = requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=10)
        sid = json.loads(opened.text[1:])["sid"]
        return sid, f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}"

    # no poll waiting: the NOOP that ends one was written on the new WebSocket
    sid, _ = open_session()
    ws = upgrade(sid)
    ws.send("40/chat," + json.dumps({"token": make_token("upgraded")}))
    assert ws.recv().startswith("40/chat,{")
    ws.close()
    # a poll waiting gets it: Engine.IO v4 "Upgrade"
    sid, url = open_session()
    poll = send_poll(server, url)
    ws = upgrade(sid)
    assert poll_answer(poll) == (200, "6")
    ws.close()
    # ...even when UPGRADE comes before that poll had its answer (in the same read as
    # the probe): the queue went to the WebSocket with the poll's NOOP
    sid, url = open_session()
    poll = send_poll(server, url)
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket&sid={sid}",
        timeout=10)
    ws.sock.sendall(websocket.ABNF.create_frame("2probe", websocket.ABNF.OPCODE_TEXT).format()
                    + websocket.ABNF.create_frame("5", websocket.ABNF.OPCODE_TEXT).format())
    assert ws.recv() == "3probe"
    assert poll_answer(poll) == (200, "6")
    ws.send("40/chat," + json.dumps({"token": make_token("upgraded")}))
    assert ws.recv().startswith("40/chat,{")
    ws.close()


@template_transport_only("one ordered writer: a close is answered after the backlog "
                         "(python-engineio's closes at once, dropping what waits)")
def test_a_close_from_the_client_is_answered_after_the_backlog(start_own_server, make_token,
                                                               auth_header):
    server = start_own_server(MAX_QUEUED_PACKETS="100000", MAX_MESSAGE_LENGTH="70000",
                              MAX_QUEUED_BYTES="50000000", EVENT_RATE="100000")
    ws = connected_raw(server, make_token("closer"),
                       sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    ws.send('42/chat,1["join",{"room":"backlog"}]')
    assert ws.recv().startswith("43/chat,1")
    count = 60  # ~4 MB: most of it waits in the server's backlog, its writer busy
    for n in range(count):
        response = requests.post(server.url + "/api/rooms/backlog/messages", timeout=10,
                                 json={"text": f"{n}:" + "x" * 65_000},
                                 headers=auth_header("poster", "admin"))
        assert response.status_code == 201, response.text
    ws.send_close(1000, b"bye")
    frames = read_server_frames(ws.sock)
    events = [json.loads(data[len(b"42/chat,"):]) for opcode, data in frames
              if opcode == 0x1 and data.startswith(b"42/chat,")]
    texts = [payload["text"] for name, payload, *_offset in events if name == "message"]
    assert [int(text.split(":")[0]) for text in texts] == list(range(count))
    assert frames[-1][0] == 0x8 and frames[-1][1][:2] == (1000).to_bytes(2, "big")
    ws.sock.close()


@template_transport_only("an upgrade's deadline and one upgrade at a time per session")
def test_an_upgrade_without_its_probe_ends_and_a_session_upgrades_once_at_a_time(
        start_own_server):
    server = start_own_server(PING_TIMEOUT="2")
    opened = requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=10)
    sid = json.loads(opened.text[1:])["sid"]
    url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket&sid={sid}"
    silent = websocket.create_connection(url, timeout=10)  # never sends the probe
    started = time.monotonic()
    for _ in range(3):  # more upgrades of the same session meanwhile: refused
        try:
            extra = websocket.create_connection(url, timeout=10)
        except websocket.WebSocketBadStatusException as exc:
            assert exc.status_code == 400
        else:
            assert close_code(extra) == 1008
    assert close_code(silent) is None  # cut at the ping timeout
    assert time.monotonic() - started < 2 + 3
    # the session itself lives on, and may upgrade now
    upgrade = websocket.create_connection(url, timeout=10)
    upgrade.send("2probe")
    assert upgrade.recv() == "3probe"
    upgrade.close()


@template_transport_only("EngineServer's sessions")
def test_sessions_stay_the_templates_whatever_dict_engineio_assigns():
    server = EngineServer(async_mode="threading")
    server.sockets = {}  # as python-engineio's disconnect() does
    server.sockets["sid"] = Socket(server, "sid")  # as its _handle_connect does
    assert type(server.sockets["sid"]) is Session


@template_transport_only("EngineServer's pinger")
def test_the_pinger_outlives_a_failing_session():
    server = EngineServer(async_mode="threading", ping_interval=0.2)
    pinged = []

    class Failing:
        sid = "failing"

        @property
        def ping_due(self):
            raise RuntimeError("broken session")

    class Pinged:
        sid, ping_due = "pinged", 0.0

        def send_ping(self):
            pinged.append(time.monotonic())

    server.sockets.update(failing=Failing(), pinged=Pinged())
    for sid in ("failing", "pinged"):  # the failing one's ping is due first
        server.pings.at(0.0, server._ping_if_due, sid)
    wait_for(lambda: pinged, message="a ping after a failing session's")
    assert "failing" not in server.sockets  # ended, not retried


@template_transport_only("its readers: python-engineio parks a green thread per WebSocket")
def test_an_idle_websocket_costs_the_worker_no_green_thread(start_own_server, make_token):
    """An open, idle WebSocket is watched by the event loop, not read by a parked green
    thread (with its copied stack, frames and request objects, about 27 KB in all, the
    bench's idle scenario): its worker grows by well under that per connection."""
    server = start_own_server(MAX_CONNECTIONS_PER_ADDRESS="10000",
                              MAX_CONNECTIONS_PER_USER="10000")
    token = make_token("idle")
    held = [connected_raw(server, token) for _ in range(100)]  # what the first allocate
    before = worker_rss_kb(server)
    count = 400
    held += [connected_raw(server, token) for _ in range(count)]
    per_connection = (worker_rss_kb(server) - before) / count
    # every connection still answers: watched, not lost
    for ws in held[::50]:
        ws.send('42/chat,1["join",{"room":"idle"}]')
        assert ws.recv().startswith("43/chat,1")
    for ws in held:
        ws.close()
    assert per_connection < 20, f"{per_connection:.1f} KB per idle connection"


@template_transport_only("the bound on the template's open WebSockets (python-engineio's are "
                         "gunicorn's requests, bounded by its pool)")
def test_a_worker_holds_at_most_worker_connections_websockets(start_own_server, make_token):
    """An open WebSocket holds no request of gunicorn's, whose pool is what
    WORKER_CONNECTIONS sizes: the transport keeps the bound itself, and refuses more
    with 503, which clients retry (maybe on another worker)."""
    server = start_own_server(WORKER_CONNECTIONS="3")
    held = [connected_raw(server, make_token(f"bounded-{n}")) for n in range(3)]
    try:
        websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket", timeout=10)
    except websocket.WebSocketBadStatusException as refused:
        assert refused.status_code == 503
    else:
        raise AssertionError("a fourth WebSocket was accepted")
    held.pop().close()
    wait_for(lambda: _accepted(server), message="a WebSocket once one closed")
    for ws in held:
        ws.close()


def _accepted(server) -> bool:
    try:
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket", timeout=10)
    except websocket.WebSocketBadStatusException:
        return False
    ws.close()
    return True
