"""SIGTERM: stop accepting, finish in-flight handlers, tell clients, exit in time."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import redis
import requests

from tests.helpers import wait_for

GRACEFUL_TIMEOUT = 10


def test_sigterm_finishes_in_flight_handlers_then_tells_clients_and_exits(
        private_redis, start_own_server, connect):
    server = start_own_server(MESSAGE_QUEUE_URL=private_redis.url,
                              GRACEFUL_TIMEOUT=str(GRACEFUL_TIMEOUT))
    sender = connect(server.url, user="sender")
    poller = connect(server.url, user="poller", transport="polling")
    for client in (sender, poller):
        client.call("join", {"room": "drain"})

    # Hold Redis writes for 3 s: the next message's handler is in flight (in PUBLISH)
    # when SIGTERM arrives.
    redis.Redis(port=private_redis.port).client_pause(3000, all=False)
    acks: list = []
    done = threading.Event()
    sender.sio.emit("message", {"room": "drain", "text": "in flight"}, namespace="/chat",
                    callback=lambda ack: (acks.append(ack), done.set()))
    time.sleep(0.5)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)

    # stops accepting at once: the master closes the listening socket
    with pytest.raises(requests.ConnectionError):
        wait_for(lambda: requests.get(server.url + "/api/health", timeout=1) and False,
                 timeout=3, message="the port to close")
    assert done.wait(GRACEFUL_TIMEOUT), "the in-flight handler's ack never arrived"
    assert acks[0]["ok"] is True and acks[0]["message"]["text"] == "in flight"
    for client in (sender, poller):
        assert client.wait_event("shutdown") == [{"reason": "server_shutdown", "reconnect": True}]
        wait_for(lambda c=client: c.disconnects, message="the client to be disconnected")
    assert poller.wait_event("message")[0]["text"] == "in flight"  # delivered before closing
    # the ack came before the shutdown notice
    assert [name for _, name, _ in sender.received] == ["shutdown"]
    server.process.wait(GRACEFUL_TIMEOUT + 5)
    elapsed = time.monotonic() - started
    assert elapsed < GRACEFUL_TIMEOUT, f"exit took {elapsed:.1f}s, not less than the graceful timeout"
    assert "Worker graceful timeout" not in server.log()
    assert "shutdown: notified 2 session(s), cut 1 websocket(s)" in server.log()
