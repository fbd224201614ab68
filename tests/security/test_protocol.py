"""Engine.IO / Socket.IO level abuse: each gets its refusal, and the server stays up."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests
import websocket

from tests.helpers import (
    ROOT,
    STOCK,
    assert_closed,
    close_code,
    connected_raw,
    install_node_modules,
    metric,
    poll_answer,
    raw_websocket,
    scrape_metrics,
    send_poll,
    stock_deviation,
    wait_for,
)
from tests.security.greeting_app import REFUSED_USER

# python-engineio decodes a WebSocket message outside its error handling: the WSGI
# server then writes an HTTP 500 response into the open WebSocket
NOT_ENGINE_IO = stock_deviation("a message that is not an Engine.IO packet gets an HTTP 500 "
                                "written into the WebSocket")
# Each closes the sender's connection (and only it)...
MALFORMED = [
    pytest.param("xyz", marks=NOT_ENGINE_IO, id="xyz"),
    "4not-a-socketio-packet", "42/chat,", '42/chat,{"not": "a list"}', "42/chat,[]",
    '42/chat,[["list-as-name"], {}]', '42/chat,[5, {}]', "40/chat,{bad json", "49",
    '452-/chat,["x",{"_placeholder":true,"num":0}]' + "garbage",
    pytest.param("", marks=NOT_ENGINE_IO, id="empty"),
    # reserved names: python-socketio would hand them to the namespace as the real events
    '42/chat,1["connect",{"HTTP_AUTHORIZATION":"Bearer x"},{"token":"x"}]',
    '42/chat,2["disconnect","forget me"]',
]
# ...or is ignored, as the protocol allows.
IGNORED = ["43/chat,99[]", "2probe", "6"]


def still_serving(server, connect) -> None:
    assert requests.get(server.url + "/api/health", timeout=10).status_code == 200
    client = connect(server.url, user="after-abuse")
    assert client.call("join", {"room": "after"})["ok"] is True


@pytest.mark.parametrize("packet", MALFORMED)
def test_malformed_packets_close_that_connection_only(server, connect, make_token, packet):
    log_mark = server.log_mark()
    bystander = connect(server.url, user="bystander")
    ws = connected_raw(server, make_token("raw"))
    ws.send(packet)
    assert_closed(ws)
    still_serving(server, connect)
    assert bystander.call("join", {"room": "calm"})["ok"] is True
    assert "Traceback" not in server.log(log_mark)


@pytest.mark.parametrize("packet", IGNORED)
def test_harmless_unexpected_packets_are_ignored(server, make_token, packet):
    ws = connected_raw(server, make_token("raw"))
    ws.send(packet)
    ws.send('42/chat,7["join",{"room":"still-open"}]')
    ws.settimeout(5)
    assert ws.recv().startswith("43/chat,7[")  # the connection still works
    ws.close()


def test_binary_garbage_frame(server, connect, make_token):
    ws = connected_raw(server, make_token("raw"))
    ws.send_binary(b"\x00\xff\x13garbage")
    ws.close()
    still_serving(server, connect)


def test_events_before_namespace_connect_are_ignored(server, connect):
    ws = raw_websocket(server)
    ws.send('42/chat,1["join",{"room":"sneaky"}]')
    ws.send('42["join",{"room":"sneaky"}]')
    ws.settimeout(1)
    with pytest.raises((websocket.WebSocketTimeoutException, websocket.WebSocketConnectionClosedException)):
        while True:
            assert not ws.recv().startswith("43")  # never an ack: nothing ran
    ws.close()
    still_serving(server, connect)


def test_unknown_sid_is_400(server):
    response = requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling&sid=nope",
                            timeout=10)
    assert response.status_code == 400


def test_a_websocket_sid_cannot_be_used_over_polling(server, connect):
    victim = connect(server.url, user="victim")
    sid = victim.sio.eio.sid
    response = requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}",
                            timeout=10)
    assert response.status_code == 400
    posted = requests.post(f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}",
                           data='42/chat,["message",{"room":"x","text":"spoof"}]', timeout=10)
    assert posted.status_code == 400
    assert victim.sio.connected


@stock_deviation("a missing transport is served as polling")
def test_unsupported_engineio_version_and_transport_are_400(server):
    assert requests.get(f"{server.url}/socket.io/?EIO=3&transport=polling",
                        timeout=10).status_code == 400
    # a missing transport too: it was served as polling (Engine.IO v4: mandatory)
    for query in ("EIO=4&transport=carrier-pigeon", "EIO=4"):
        response = requests.get(f"{server.url}/socket.io/?{query}", timeout=10)
        assert response.status_code == 400
        assert response.json() == {"code": 0, "message": "Transport unknown"}  # as Node


@stock_deviation("a PUT is answered 405")
def test_a_handshake_by_another_method_than_get_is_400(server):
    """Engine.IO test suite, "fails with an invalid request method"; Node's code 2."""
    url = f"{server.url}/socket.io/?EIO=4&transport=polling"
    for method in ("POST", "PUT", "DELETE"):
        response = requests.request(method, url, timeout=10)
        assert response.status_code == 400, (method, response.status_code)
    assert requests.put(url, timeout=10).json() == {"code": 2, "message": "Bad handshake method"}
    assert requests.get(url, timeout=10).status_code == 200


def test_payload_over_the_maximum_closes_a_websocket(server, connect, make_token, settings):
    ws = connected_raw(server, make_token("big"))
    ws.send('42/chat,["message",{"room":"x","text":"' + "x" * settings.max_http_buffer_size + '"}]')
    # RFC 6455's "message too big": the template's (python-engineio's gives no code)
    assert close_code(ws) == 1009 or STOCK
    assert_closed(ws)
    still_serving(server, connect)


def test_payload_over_the_maximum_is_413_over_polling(server, settings):
    handshake = requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=10)
    sid = json.loads(handshake.text[1:])["sid"]
    response = requests.post(f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}",
                             data="4" + "x" * (settings.max_http_buffer_size + 1), timeout=10)
    assert response.status_code == 413


def test_a_half_open_tcp_connection_does_not_block_others(server, connect):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n")
        still_serving(server, connect)  # the request is never finished
    wait_for(lambda: requests.get(server.url + "/api/health", timeout=5).ok)


def polling_session(server, token: str) -> tuple[requests.Session, str]:
    """A long-polling Engine.IO session connected to /chat."""
    http = requests.Session()
    opened = http.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=10)
    url = f"{server.url}/socket.io/?EIO=4&transport=polling&sid={json.loads(opened.text[1:])['sid']}"
    assert http.post(url, data="40/chat," + json.dumps({"token": token}), timeout=10).ok
    assert http.get(url, timeout=10).text.startswith("40/chat,")
    return http, url


@stock_deviation("a polling POST of more than 16 packets is answered 200 and dropped",
                 run=False)  # (its polls would wait for their timeout)
def test_a_polling_post_of_many_packets_is_not_dropped(start_own_server, make_token):
    server = start_own_server(EVENT_BURST="100")
    http, url = polling_session(server, make_token("poller"))
    count = 60  # python-engineio decoded at most 16 per POST, and answered 200 anyway
    body = "\x1e".join(f'42/chat,{n}["join",{{"room":"many"}}]' for n in range(count))
    assert http.post(url, data=body, timeout=10).status_code == 200
    acks = set()

    def poll() -> bool:
        for packet in http.get(url, timeout=10).text.split("\x1e"):
            if packet.startswith("43/chat,"):
                acks.add(int(packet[len("43/chat,"):].split("[", 1)[0]))
        return len(acks) == count

    wait_for(poll, message="an ack for each of the packets")


@stock_deviation("a polling POST of more than 16 packets is dropped whole", run=False)
def test_events_for_a_namespace_never_joined_are_counted_not_logged_one_by_one(server):
    http = requests.Session()
    opened = http.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=10)
    url = f"{server.url}/socket.io/?EIO=4&transport=polling&sid={json.loads(opened.text[1:])['sid']}"
    packet = '42/chat,["message",{"room":"r","text":"x"}]'
    body = "\x1e".join([packet] * (99_000 // (len(packet) + 1)))
    before = metric(scrape_metrics(server), "realtime_unconnected_events_total")
    mark = server.log_mark()
    assert http.post(url, data=body, timeout=10).status_code == 200
    wait_for(lambda: metric(scrape_metrics(server), "realtime_unconnected_events_total")
             - before == body.count("\x1e") + 1, message="every dropped event counted")
    lines = [line for line in server.log(mark).splitlines() if "connected to" in line]
    assert len(lines) == 1, lines[:3]


@stock_deviation("a polling payload that cannot be decoded is answered 200")
def test_a_malformed_polling_payload_is_400_and_ends_the_session(server, make_token):
    http, url = polling_session(server, make_token("poller"))
    assert http.post(url, data="42/chat,[]\x1e\xff\x1e9garbage", timeout=10).status_code == 400
    assert http.get(url, timeout=10).status_code == 400  # the session is gone


@stock_deviation("pingInterval is announced in whole seconds (0.5 s as 0)")
def test_a_sub_second_ping_interval_is_announced_as_it_is(start_own_server):
    server = start_own_server(PING_INTERVAL="0.5")
    opened = requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=10)
    assert json.loads(opened.text[1:])["pingInterval"] == 500


def open_polling(server) -> str:
    """A new long-polling Engine.IO session (its OPEN read): its URL."""
    opened = requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=10)
    return f"{server.url}/socket.io/?EIO=4&transport=polling&sid={json.loads(opened.text[1:])['sid']}"


@stock_deviation("each UPGRADE packet over polling queues a NOOP")
def test_upgrade_packets_over_polling_queue_nothing(server):
    """One 100 KB POST of `5` (UPGRADE) packets queued 49,999 NOOPs (+7 MB) for the
    session's next poll; Node ignores UPGRADE outside a probing WebSocket."""
    url = open_polling(server)
    assert requests.post(url, data="\x1e".join(["5"] * 49_999), timeout=30).status_code == 200
    assert requests.post(url, data='40/chat,{"token":"x"}', timeout=10).status_code == 200
    answer = requests.get(url, timeout=30).text.split("\x1e")
    assert len(answer) == 1 and answer[0].startswith("44/chat,"), answer[:3]


@stock_deviation("a POST is answered OK")
def test_a_polling_post_is_answered_ok(server):
    response = requests.post(open_polling(server), data="3", timeout=10)
    # Engine.IO v4 "Sending data": `ok` (python-engineio said `OK`), text/html as Node
    assert (response.status_code, response.text) == (200, "ok")
    assert response.headers["Content-Type"] == "text/html"


@stock_deviation("a POST with an unknown packet type hangs", run=False)
def test_an_unknown_packet_type_in_a_polling_post_is_400_and_ends_the_session(server):
    url = open_polling(server)
    # well-formed, but Engine.IO has no packet type 7: python-engineio answered only
    # after waiting, forever, for a poll to take the session's CLOSE
    assert requests.post(url, data="7", timeout=10).status_code == 400
    assert requests.get(url, timeout=10).status_code == 400  # the session is gone


@stock_deviation("a second poll at once does not end the session")
def test_a_second_poll_at_once_is_400_and_ends_the_session(server):
    url = open_polling(server)
    waiting = send_poll(server, url)  # no packet is due for 25 s: it waits
    second = requests.get(url, timeout=10)
    # Engine.IO v4 "Receiving data": 400 to the overlapping GET, and the session is
    # closed: the waiting one learns it (CLOSE), as Node's
    assert second.status_code == 400
    assert poll_answer(waiting) == (200, "1")
    assert requests.get(url, timeout=10).status_code == 400


@stock_deviation("a forced close answers the waiting poll with an empty body")
def test_a_waiting_poll_learns_how_its_session_ended(server):
    # ended by the server (a packet that is not Socket.IO): CLOSE, not an empty 200
    url = open_polling(server)
    waiting = send_poll(server, url)
    assert requests.post(url, data="4not-socket-io", timeout=10).status_code == 200
    assert poll_answer(waiting) == (200, "1")
    # closed by the client (its CLOSE packet): NOOP, as Node (Engine.IO test suite)
    url = open_polling(server)
    waiting = send_poll(server, url)
    assert requests.post(url, data="1", timeout=10).status_code == 200
    assert poll_answer(waiting) == (200, "6")
    assert requests.get(url, timeout=10).status_code == 400


@stock_deviation("a forced close answers the waiting poll with an empty body")
def test_a_poll_waiting_at_a_ping_timeout_gets_close(start_own_server):
    server = start_own_server(PING_INTERVAL="1", PING_TIMEOUT="1")
    url = open_polling(server)
    assert requests.get(url, timeout=10).text == "2"  # a ping, left unanswered
    started = time.monotonic()
    response = requests.get(url, timeout=10)
    assert (response.status_code, response.text) == (200, "1")  # was empty: no CLOSE
    assert time.monotonic() - started < 5


def test_an_unknown_namespace_is_refused_as_the_protocol_says(server):
    ws = raw_websocket(server)
    for namespace in ("/random", "/"):
        ws.send("40" + ("" if namespace == "/" else namespace + ","))
        prefix = "44" + ("" if namespace == "/" else namespace + ",")
        # socket.io-protocol v5 (its test suite); python-socketio: "Unable to connect"
        assert ws.recv() == prefix + '{"message":"Invalid namespace"}'
    ws.close()


def test_the_connect_packet_comes_before_what_the_connect_handler_emits(start_own_server,
                                                                       make_token):
    server = start_own_server(app="tests.security.greeting_app:create()")
    ws = raw_websocket(server)
    ws.send("40/greet," + json.dumps({"token": make_token("greeted")}))
    frames = [ws.recv() for _ in range(3)]
    # python-socketio sent CONNECT after the handler, so its emits went first
    assert frames[0].startswith("40/greet,{")
    assert sorted(frames[1:]) == ['42/greet,["welcome",{"to":"sid"}]',
                                  '42/greet,["welcome",{"to":"user"}]']
    ws.close()
    # refused after emitting: only the refusal (the socket never existed)
    ws = raw_websocket(server)
    ws.send("40/greet," + json.dumps({"token": make_token(REFUSED_USER)}))
    ws.send("40/chat," + json.dumps({"token": make_token("barrier")}))
    assert ws.recv().startswith('44/greet,{"message":"greeted, then refused"')
    assert ws.recv().startswith("40/chat,{")
    ws.close()


def node_client(server_url: str, token: str, **options) -> subprocess.Popen:
    """protocol_clients.js: the official socket.io-client, one JSON line per report."""
    return subprocess.Popen(
        ["node", str(ROOT / "tests" / "security" / "protocol_clients.js"),
         json.dumps({"url": server_url + "/chat", "token": token, **options})],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "NODE_PATH": str(install_node_modules())})


def next_report(client: subprocess.Popen, key: str) -> dict:
    """The client's next report of `key` (others before it are skipped)."""
    reports: queue.Queue = queue.Queue()

    def read() -> None:
        for line in client.stdout:
            report = json.loads(line)
            if key in report:
                reports.put(report[key])
                return
        reports.put(None)

    threading.Thread(target=read, daemon=True).start()
    report = reports.get(timeout=20)
    assert report is not None, f"the client exited without a {key!r} report"
    return report


@pytest.mark.parametrize("transport", ["polling", "websocket"])
def test_an_engineio_refusal_reaches_the_official_client_which_retries(
        start_own_server, make_token, connect, transport):
    # Refused at the Engine.IO handshake (python-engineio: 401 and the refusal's JSON),
    # as a draining worker refuses: socket.io-client retries that, unlike a namespace's
    # CONNECT_ERROR. The code is readable over polling only: a browser WebSocket (and
    # socket.io-client over Node's `ws`) exposes no body of a refused upgrade.
    server = start_own_server(MAX_CONNECTIONS_PER_ADDRESS="1")
    holder = connect(server.url, user="holder")
    client = node_client(server.url, make_token("refused"), transports=[transport],
                         scenario="connect")
    try:
        error = next_report(client, "connect_error")
        assert error["active"] is True  # it retries by itself
        if transport == "polling":
            assert error["message"] == "xhr poll error" and error["description"] == 401
            assert json.loads(error["responseText"])["code"] == "too_many_connections"
        else:
            assert error["message"] == "websocket error"
            assert error["description"] == "Unexpected server response: 401"
        next_report(client, "reconnect_attempt")
        holder.close()  # the address's slot is free: the next attempt connects
        assert next_report(client, "connected") is True
    finally:
        client.kill()
        client.wait()


@stock_deviation("a POST of more than 16 packets is answered 200 and dropped", run=False)
def test_a_burst_of_acks_over_polling_comes_back_whole(start_own_server, make_token):
    server = start_own_server(EVENT_BURST="100")
    # socket.io-client packs the 60 emits of one turn into one POST (python-engineio
    # dropped a POST of more than 16 packets, answering 200)
    client = node_client(server.url, make_token("acker"), transports=["polling"],
                         scenario="acks", count=60)
    out, _ = client.communicate(timeout=60)
    assert json.loads(out.splitlines()[-1]) == {"acks": 60}, out


@stock_deviation("an ended polling session's waiting poll gets an empty body, not CLOSE")
def test_a_draining_workers_refusal_reaches_the_official_client_which_retries(
        start_own_server, make_token):
    server = start_own_server(GRACEFUL_TIMEOUT="10")
    client = node_client(server.url, make_token("drained"), transports=["polling"],
                         scenario="connect", stay=True, keepAlive=True)
    try:
        assert next_report(client, "connected") is True
        os.killpg(server.process.pid, signal.SIGTERM)  # as a deploy: app/sockets/shutdown.py
        # The drain ends the session (the waiting poll gets CLOSE) and the client shakes
        # hands again, on a kept-alive connection to the draining worker (the port
        # itself is closed at once): refused at the Engine.IO level, and retried.
        assert next_report(client, "disconnect") == "transport close"
        error = next_report(client, "connect_error")
        assert error["active"] is True
        # the draining worker's 401 if the handshake came before it exited (on a busy
        # machine it may not: then its port is closed), an Engine.IO-level failure
        # either way, which the client retries
        text = error["responseText"] or ""
        assert (json.loads(text)["code"] == "shutting_down" if text.startswith("{")
                else any(why in text for why in ("ECONNREFUSED", "ECONNRESET", "hang up"))), error
        next_report(client, "reconnect_attempt")
    finally:
        client.kill()
        client.wait()


@stock_deviation("a polling session the server ends between two polls answers the next "
                 "one 400, which socket.io-client reads as a transport error")
def test_a_polling_session_ended_between_polls_gets_close_at_its_next_poll(
        start_own_server, make_token):
    """Node keeps a socket it closes until its transport has said so: the next poll
    gets what was queued, CLOSE last, and the client sees a clean close."""
    server = start_own_server(GRACEFUL_TIMEOUT="10")
    http = requests.Session()  # kept alive: the draining worker closes its port at once
    opened = http.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=10)
    url = f"{server.url}/socket.io/?EIO=4&transport=polling&sid={json.loads(opened.text[1:])['sid']}"
    token = json.dumps({"token": make_token("between-polls")})
    poster = requests.Session()  # POSTs on a connection of their own, as browsers send them
    assert poster.post(url, data=f"40/chat,{token}", timeout=10).status_code == 200
    assert http.get(url, timeout=10).text.startswith("40/chat,")
    mark = server.log_mark()
    os.killpg(server.process.pid, signal.SIGTERM)  # the drain ends the session: no poll waits
    wait_for(lambda: "shutdown: notified" in server.log(mark), timeout=15)
    # a POST meanwhile (a pong, an ack) is taken, as Node takes it while closing
    assert poster.post(url, data="3", timeout=10).text == "ok"
    answer = http.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    packets = answer.text.split("\x1e")
    assert packets[-1] == "1", packets  # CLOSE, after the shutdown notice queued before it
    assert any(p.startswith('42/chat,["shutdown"') for p in packets), packets


@stock_deviation("a POST for a session the server closed fails inside python-engineio")
def test_a_session_closed_for_breaking_a_limit_is_gone_at_once(server):
    """No CLOSE kept for its next poll (that is for a session the server ends, a drain):
    the client broke a limit, and the session is gone, as Node's after a parse error."""
    url = open_polling(server)
    too_large = requests.post(url, data="4" + "x" * 100_000, timeout=10)  # closes it
    assert (too_large.status_code, too_large.json()["code"]) == (413, "payload_too_large")
    late = requests.post(url, data="3", timeout=10)
    assert (late.status_code, late.json()) == (400, {"code": 1, "message": "Session ID unknown"})
    assert requests.get(url, timeout=10).status_code == 400


@stock_deviation("a polling session outlives its pong's deadline until the next sweep")
def test_a_silent_polling_session_ends_at_its_pong_deadline(start_own_server):
    """The Engine.IO test suite's timing: pingInterval 300 ms, pingTimeout 200 ms, no
    poll; a request made once both have passed since the handshake finds the session
    gone (python-engineio's sweep and the template's pinger each came up to 100 ms late,
    and the session answered 200)."""
    server = start_own_server(PING_INTERVAL="0.3", PING_TIMEOUT="0.2")
    for method in ("POST", "GET"):
        url = open_polling(server)
        time.sleep(0.5)  # from the handshake's answer: the deadline under test
        late = requests.request(method, url, data="3" if method == "POST" else None, timeout=10)
        assert late.status_code == 400, (method, late.text)


@stock_deviation("a second WebSocket for an upgraded session is refused with 400")
def test_a_second_websocket_for_an_upgraded_session_is_accepted_and_closed(server):
    """As Node (the Engine.IO test suite): the second connection opens and is closed at
    once; the session stays on its WebSocket."""
    opened = requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=10)
    sid = json.loads(opened.text[1:])["sid"]
    url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket&sid={sid}"
    first = websocket.create_connection(url, timeout=10)
    first.send("2probe")
    assert first.recv() == "3probe"
    first.send("5")
    assert requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}",
                        timeout=10).status_code == 400  # the session is the WebSocket's
    second = websocket.create_connection(url, timeout=10)  # a 101, not a 400
    opcode, _ = second.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    second.close()
    # from an origin the server does not accept: refused before anything, as any request
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, timeout=10, origin="https://elsewhere.example")
    assert refused.value.status_code == 400
    first.send("40/nowhere,")
    assert first.recv().startswith("44/nowhere,")
    first.close()
