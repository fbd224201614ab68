"""RFC 6455 as app/sockets/websocket.py speaks it, against a real server."""

from __future__ import annotations

import base64
import json
import os
import socket

import pytest
import requests
import websocket
from websocket import ABNF

from app.sockets.websocket import unmask
from tests.helpers import assert_closed, connected_raw, wait_for


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


@pytest.mark.parametrize("frame", [
    pytest.param(raw_frame(0x81, b"40", masked=False), id="unmasked"),
    pytest.param(raw_frame(0xC1, b"40"), id="reserved-bit"),
    pytest.param(raw_frame(0x83, b"40"), id="unknown-opcode"),
    pytest.param(raw_frame(0x80, b"40"), id="stray-continuation"),
    pytest.param(raw_frame(0x09, b"x"), id="fragmented-ping"),
    pytest.param(raw_frame(0x89, b"x" * 126), id="long-ping"),
    pytest.param(raw_frame(0x81, b"4\xff\xfe"), id="bad-utf8"),
])
def test_a_frame_the_rfc_forbids_closes_that_connection_only(server, connect, make_token,
                                                              frame):
    bystander = connect(server.url, user="bystander")
    ws = connected_raw(server, make_token("frames"))
    ws.sock.sendall(frame)
    assert_closed(ws)
    assert bystander.call("join", {"room": "still-here"})["ok"] is True


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


@pytest.mark.parametrize("key", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_an_invalid_handshake_is_400(server, key):
    request = (f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
               f"Host: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request.encode())
        head = sock.recv(4096).decode(errors="replace")
    assert head.startswith("HTTP/1.1 400")


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
