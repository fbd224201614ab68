"""RFC 6455 as app/transport/websocket.py speaks it, against a real server."""

from __future__ import annotations

import base64
import json
import os
import socket

import pytest
import requests
import websocket
from websocket import ABNF

from app.transport.websocket import unmask
from tests.helpers import (
    assert_closed,
    close_code,
    connected_raw,
    template_transport_only,
    wait_for,
)

# Under ENGINEIO_TRANSPORT=stock the async library's WebSocket server speaks RFC 6455:
# only what any conforming server does is checked then.
RFC_6455 = "RFC 6455 details of app/transport/websocket.py"


@template_transport_only(RFC_6455)
def test_unmask_matches_the_rfc_definition():
    mask = os.urandom(4)
    for n in (0, 1, 3, 4, 5, 125, 1000):
        payload = os.urandom(n)
        assert unmask(payload, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_a_ping_frame_is_answered_with_its_payload(server, make_token):
    ws = connected_raw(server, make_token("frames"))
    ws.ping(b"are you there")
    opcode, frame = ws.recv_data_frame(control_frame=True)
    assert opcode == ABNF.OPCODE_PONG and frame.data == b"are you there"
    ws.close()


def test_a_fragmented_message_is_one_event(server, make_token):
    ws = connected_raw(server, make_token("frames"))
    text = '42/chat,7["join",{"room":"fragments"}]'
    parts = [text[:5], text[5:20], text[20:]]
    ws.send_frame(ABNF.create_frame(parts[0], ABNF.OPCODE_TEXT, fin=0))
    ws.ping(b"between fragments")  # control frames may come between fragments
    ws.send_frame(ABNF.create_frame(parts[1], ABNF.OPCODE_CONT, fin=0))
    ws.send_frame(ABNF.create_frame(parts[2], ABNF.OPCODE_CONT, fin=1))
    replies = [ws.recv_data_frame(control_frame=True)[1] for _ in range(2)]
    assert replies[0].opcode == ABNF.OPCODE_PONG
    assert replies[1].data.decode().startswith('43/chat,7[{"ok":true')
    ws.close()


def raw_frame(first_byte: int, payload: bytes, masked: bool = True) -> bytes:
    """A client frame as bytes: any opcode and flags, masked or not."""
    n = len(payload)
    length = bytes([n]) if n < 126 else bytes([126]) + n.to_bytes(2, "big")
    if not masked:
        return bytes([first_byte]) + length + payload
    mask = os.urandom(4)
    return bytes([first_byte, 0x80 | length[0]]) + length[1:] + mask + unmask(payload, mask)


@template_transport_only(RFC_6455)
@pytest.mark.parametrize(("frame", "code"), [
    pytest.param(raw_frame(0x81, b"40", masked=False), 1002, id="unmasked"),
    pytest.param(raw_frame(0xC1, b"40"), 1002, id="reserved-bit"),
    pytest.param(raw_frame(0x83, b"40"), 1002, id="unknown-opcode"),
    pytest.param(raw_frame(0x80, b"40"), 1002, id="stray-continuation"),
    pytest.param(raw_frame(0x09, b"x"), 1002, id="fragmented-ping"),
    pytest.param(raw_frame(0x89, b"x" * 126), 1002, id="long-ping"),
    pytest.param(raw_frame(0x81, b"4\xff\xfe"), 1007, id="bad-utf8"),
    # invalid UTF-8 ends a fragmented message at once, its end never sent
    pytest.param(raw_frame(0x01, b"4\xc0\xaf"), 1007, id="bad-utf8-in-a-fragment"),
    pytest.param(raw_frame(0x01, b"4x") + raw_frame(0x81, b"4"), 1002,
                 id="message-inside-a-fragmented-one"),
    pytest.param(raw_frame(0x81, b"xyz"), 1008, id="not-engine-io"),
    pytest.param(raw_frame(0x81, b"9"), 1008, id="unknown-engine-io-packet-type"),
])
def test_a_frame_the_rfc_forbids_closes_that_connection_only(server, connect, make_token,
                                                              frame, code):
    bystander = connect(server.url, user="bystander")
    ws = connected_raw(server, make_token("frames"))
    ws.sock.sendall(frame)
    assert close_code(ws) == code
    assert_closed(ws)
    assert bystander.call("join", {"room": "still-here"})["ok"] is True


@template_transport_only(RFC_6455)
def test_frames_accepted_before_an_error_are_still_written(server, make_token):
    ws = connected_raw(server, make_token("frames"))
    # an Engine.IO UPGRADE packet (answered with NOOP, "6") and a ping, then an error
    ws.sock.sendall(raw_frame(0x81, b"5") + raw_frame(0x89, b"still") + raw_frame(0x83, b"x"))
    ws.settimeout(5)
    assert ws.recv_data_frame(control_frame=True)[1].data == b"6"
    opcode, frame = ws.recv_data_frame(control_frame=True)
    assert opcode == ABNF.OPCODE_PONG and frame.data == b"still"
    assert close_code(ws) == 1002


@template_transport_only(RFC_6455)
@pytest.mark.parametrize(("payload", "answer"), [
    pytest.param(b"", 1000, id="empty"), pytest.param(b"\x03", 1002, id="one-byte"),
    *[pytest.param(code.to_bytes(2, "big") + b"bye", code, id=f"valid-{code}")
      for code in (1000, 1001, 1003, 1007, 1011, 3000, 4999)],
    *[pytest.param(code.to_bytes(2, "big"), 1002, id=f"invalid-{code}")
      for code in (0, 999, 1004, 1005, 1006, 1012, 1015, 2000, 2999, 5000, 65535)],
    pytest.param((1000).to_bytes(2, "big") + b"\xff\xfe", 1007, id="reason-not-utf8"),
])
def test_the_close_code_of_the_client_is_checked_and_echoed(server, make_token, payload,
                                                            answer):
    ws = connected_raw(server, make_token("frames"))
    ws.sock.sendall(raw_frame(0x88, payload))
    assert close_code(ws) == answer


def test_a_close_frame_is_answered_and_the_session_ends(server, connect, make_token):
    admin = connect(server.url, ["/admin"], user="root", role="admin")
    before = admin.call("stats", {}, namespace="/admin")["connections"]["/chat"]
    ws = connected_raw(server, make_token("frames"))
    ws.send_close()
    opcode, _ = ws.recv_data_frame(control_frame=True)
    assert opcode == ABNF.OPCODE_CLOSE
    ws.shutdown()
    wait_for(lambda: admin.call("stats", {}, namespace="/admin")["connections"]["/chat"]
             == before, message="the session to end")


def upgrade_head(server, key: str, version: str = "13") -> list[str]:
    """A WebSocket upgrade request with `key` and `version`: the head of the answer
    (status line, then headers)."""
    request = (f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
               f"Host: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request.encode())
        return sock.recv(4096).decode(errors="replace").split("\r\n\r\n", 1)[0].split("\r\n")


def invalid_handshake(server, key: str) -> str:
    """A WebSocket upgrade request with `key`: the server's status line."""
    return upgrade_head(server, key)[0]


@template_transport_only(RFC_6455)
@pytest.mark.parametrize("key", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_an_invalid_handshake_is_400(server, key):
    assert invalid_handshake(server, key).startswith("HTTP/1.1 400")


@template_transport_only(RFC_6455)
def test_a_handshake_of_another_version_is_told_which_one_is_spoken(server):
    head = upgrade_head(server, base64.b64encode(os.urandom(16)).decode(), version="8")
    assert head[0].startswith("HTTP/1.1 400")
    # RFC 6455 4.2.2: the versions the server understands
    assert "sec-websocket-version: 13" in [line.lower() for line in head[1:]]


@template_transport_only(RFC_6455)
def test_invalid_handshakes_leave_no_session_behind(start_own_server, connect):
    # each made an Engine.IO session (counted per address) that lived until its ping timeout
    server = start_own_server(MAX_CONNECTIONS_PER_ADDRESS="2")
    for _ in range(3):
        assert invalid_handshake(server, "not base64!").startswith("HTTP/1.1 400")
    assert connect(server.url, user="after-bad-handshakes").sio.connected


def test_a_broken_upgrade_from_polling_closes_that_connection_only(server, connect):
    opened = requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=10)
    sid = json.loads(opened.text[1:])["sid"]
    log_mark = server.log_mark()
    ws = websocket.create_connection(  # an upgrade: no OPEN packet on this WebSocket
        f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket&sid={sid}",
        timeout=10)
    ws.sock.sendall(raw_frame(0x81, b"2probe", masked=False))  # the probe, unmasked
    assert_closed(ws)
    bystander = connect(server.url, user="bystander")
    assert bystander.call("join", {"room": "after-upgrade"})["ok"] is True
    assert "Traceback" not in server.log(log_mark)
