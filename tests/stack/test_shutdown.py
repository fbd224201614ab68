"""SIGTERM: stop accepting, finish in-flight handlers, tell clients, exit in time."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time

import pytest
import redis
import requests
import websocket

from tests.helpers import raw_websocket, wait_for

GRACEFUL_TIMEOUT = 10


def test_sigterm_finishes_in_flight_handlers_then_tells_clients_and_exits(
        private_redis, start_own_server, connect, make_token):
    server = start_own_server(MESSAGE_QUEUE_URL=private_redis.url,
                              GRACEFUL_TIMEOUT=str(GRACEFUL_TIMEOUT))
    sender = connect(server.url, user="sender")
    poller = connect(server.url, user="poller", transport="polling")
    late = raw_websocket(server)  # an Engine.IO session that connects a namespace late
    for client in (sender, poller):
        client.call("join", {"room": "drain"})

    # Hold Redis writes for 3 s: the next message's handler is in flight (in PUBLISH)
    # when SIGTERM arrives.
    redis.Redis(port=private_redis.port).client_pause(3000, all=False)
    acks: list = []
    done = threading.Event()
    sender.sio.emit("message", {"room": "drain", "text": "in flight"}, namespace="/chat",
                    callback=lambda ack: (acks.append(ack), done.set()))
    # the handler has emitted locally (the poller has it) and now waits in PUBLISH
    assert poller.wait_event("message")[0]["text"] == "in flight"
    started = time.monotonic()
    # to the master and the worker at once, as `kill` of a process group or a container
    # runtime does (the master forwards it too): one drain
    os.killpg(server.process.pid, signal.SIGTERM)

    # stops accepting at once: the master closes the listening socket
    with pytest.raises(requests.ConnectionError):
        wait_for(lambda: requests.get(server.url + "/api/health", timeout=1) and False,
                 timeout=3, message="the port to close")
    # a namespace connect while draining: the connection is cut (clients retry that),
    # never refused at the namespace (socket.io clients never retry that)
    late.send("40/chat," + json.dumps({"token": make_token("late")}))
    frames = []
    with contextlib.suppress(websocket.WebSocketException, ConnectionError):
        while frame := late.recv():
            frames.append(frame)
    assert not any(frame.startswith("44") for frame in frames), frames
    assert done.wait(GRACEFUL_TIMEOUT), "the in-flight handler's ack never arrived"
    assert acks[0]["ok"] is True and acks[0]["message"]["text"] == "in flight"
    for client in (sender, poller):
        assert client.wait_event("shutdown") == [{"reason": "server_shutdown", "reconnect": True}]
        wait_for(lambda c=client: c.disconnects, message="the client to be disconnected")
    # the ack came before the shutdown notice
    assert [name for _, name, _ in sender.received if name != "presence"] == ["shutdown"]
    server.process.wait(GRACEFUL_TIMEOUT + 5)
    elapsed = time.monotonic() - started
    assert elapsed < GRACEFUL_TIMEOUT, f"exit took {elapsed:.1f}s, not less than the graceful timeout"
    assert "Worker graceful timeout" not in server.log()
    assert server.log().count("shutdown: notified") == 1  # once, not per signal
    # (the count of sessions may include the late one: cut, its reader may still be
    # draining what it sends; each client's own notice is checked above)
    assert "Traceback" not in server.log()


def test_sigterm_tells_websocket_clients_before_the_worker_exits(
        private_redis, start_own_server, connect):
    """An open WebSocket holds no request of gunicorn's (the event loop watches its
    socket): the drain still finds every one, notifies and cuts it after the handler in
    flight is done, and the worker exits once that is over (gunicorn itself waits for
    its requests only: tests/test_worker.py)."""
    server = start_own_server(MESSAGE_QUEUE_URL=private_redis.url,
                              GRACEFUL_TIMEOUT=str(GRACEFUL_TIMEOUT))
    clients = [connect(server.url, user=f"websocket-{n}") for n in range(3)]
    for client in clients:
        client.call("join", {"room": "drain"})
    redis.Redis(port=private_redis.port).client_pause(3000, all=False)
    acks: list = []
    done = threading.Event()
    clients[0].sio.emit("message", {"room": "drain", "text": "in flight"}, namespace="/chat",
                        callback=lambda ack: (acks.append(ack), done.set()))
    assert clients[1].wait_event("message")[0]["text"] == "in flight"  # now in PUBLISH
    os.killpg(server.process.pid, signal.SIGTERM)
    assert done.wait(GRACEFUL_TIMEOUT), "the in-flight handler's ack never arrived"
    assert acks[0]["ok"] is True
    for client in clients:
        assert client.wait_event("shutdown") == [{"reason": "server_shutdown", "reconnect": True}]
        wait_for(lambda c=client: c.disconnects, message="the client to be disconnected")
    server.process.wait(GRACEFUL_TIMEOUT + 5)
    assert "Worker graceful timeout" not in server.log()
    assert "cut 3 websocket(s)" in server.log()
    assert "Traceback" not in server.log()
