"""Readiness follows the message queue: 503 with a reason while Redis is down."""

from __future__ import annotations

import pytest
import requests

from tests.helpers import wait_for


def ready(server):
    return requests.get(server.url + "/api/ready", timeout=10)


def test_ready_without_a_queue_is_200(server):
    response = ready(server)
    assert response.status_code == 200
    assert response.json() == {"status": "ready",
                               "checks": {"message_queue": "ok", "accepting": "ok",
                                          "background_tasks": "ok"}}


def test_ready_turns_503_while_redis_is_down_and_200_when_it_is_back(
        private_redis, start_own_server, connect, auth_header):
    first, second = (start_own_server(MESSAGE_QUEUE_URL=private_redis.url) for _ in range(2))
    alice, bob = connect(first.url, user="alice"), connect(second.url, user="bob")
    for client in (alice, bob):
        client.call("join", {"room": "outage"})
    assert ready(first).status_code == 200

    private_redis.stop()

    # (a requests.Response is falsy for a 503: return its body instead)
    body = wait_for(lambda: (r := ready(first)).status_code == 503 and r.json(),
                    message="/api/ready to report the outage")
    assert body["status"] == "unavailable"
    assert body["error"]["code"] == "not_ready"
    assert "message queue unreachable" in body["checks"]["message_queue"]
    # what cannot be published is reported to the sender, never dropped silently
    ack = alice.call("message", {"room": "outage", "text": "during"})
    assert ack == {"ok": False, "error": {"code": "queue_unavailable", "message": ack["error"]["message"]}}
    rest = requests.post(first.url + "/api/rooms/outage/messages", json={"text": "during"},
                         headers=auth_header(), timeout=30)
    assert rest.status_code == 503 and rest.json()["error"]["code"] == "queue_unavailable"

    private_redis.start()

    wait_for(lambda: ready(first).status_code == 200, message="/api/ready to recover")
    # emits resume across processes once the listeners have resubscribed
    def delivered():
        alice.call("message", {"room": "outage", "text": "after"})
        return any(m["text"] == "after" for m in bob.of("message"))
    wait_for(delivered, timeout=30, interval=0.5, message="delivery after the outage")
    assert first.process.poll() is None and second.process.poll() is None


def post_first(server, auth_header) -> requests.Response:
    return requests.post(server.url + "/api/rooms/general/messages", json={"text": "first"},
                         headers=auth_header("ops", "admin"), timeout=30)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_first_message_after_ready_on_a_fresh_redis_is_sent(
        private_redis, start_own_server, auth_header, workers):
    """(A fresh Redis had none of the queue's scripts: the first logged publish failed
    with NOSCRIPT and was refused, though /api/ready said 200.)"""
    server = start_own_server(MESSAGE_QUEUE_URL=private_redis.url, WORKERS=str(workers),
                              TRANSPORTS="websocket")
    wait_for(lambda: ready(server).status_code == 200, message="/api/ready")
    response = post_first(server, auth_header)
    assert response.status_code == 201, response.text


def test_ready_waits_for_a_restarted_redis_to_take_the_first_message(
        private_redis, start_own_server, auth_header):
    server = start_own_server(MESSAGE_QUEUE_URL=private_redis.url)
    private_redis.stop()
    wait_for(lambda: ready(server).status_code == 503, message="/api/ready to see the outage")
    private_redis.start()
    wait_for(lambda: ready(server).status_code == 200, message="/api/ready after the restart")
    response = post_first(server, auth_header)
    assert response.status_code == 201, response.text
