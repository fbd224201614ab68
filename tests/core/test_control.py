"""The control bus against a real Redis: a command whose answer JSON cannot carry is
answered with an error and the listener goes on; a signed command runs once."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from app.core.control import RedisControlBus, control_key
from tests.helpers import wait_for


@pytest.fixture()
def bus(private_redis, settings):
    """A control bus on the test's Redis, its listener ended before that Redis stops
    (else it would retry for the rest of the run, on whatever later takes the port)."""
    client = redis.Redis(port=private_redis.port)
    control = RedisControlBus(lambda: client, "test:control", timeout=2.0,
                              key=control_key(settings))
    control.register("odd", lambda payload: {"a set": {1, 2}})
    control.register("echo", lambda payload: payload)
    listener = []

    def spawn(target, *args):
        listener.append(threading.Thread(target=target, args=args, daemon=True))
        listener[0].start()

    control.start(spawn, lambda: redis.Redis(port=private_redis.port))
    yield control
    control.stop()
    private_redis.stop()  # (the listener's subscription ends with it)
    listener[0].join(10)
    assert not listener[0].is_alive(), "the control listener outlived its test"


def test_an_answer_json_cannot_carry_is_an_error_and_the_listener_goes_on(bus):
    control = bus
    [odd] = control.run("odd")
    assert "not JSON" in odd["error"]
    assert control.run("echo", {"n": 1}) == [{"n": 1}]


def test_a_signed_command_replayed_is_refused(bus, private_redis):
    control = bus
    client = redis.Redis(port=private_redis.port)
    reply_to = control.reply_prefix + "replayed"
    message = control.sign({"command": "echo", "payload": {"n": 2}, "reply_to": reply_to,
                            "ts": time.time()})
    assert client.publish(control.channel, message) == 1
    wait_for(lambda: client.llen(reply_to) == 1, message="the first run's answer")
    assert client.publish(control.channel, message) == 1  # heard, and refused
    assert control.run("echo", {"n": 3}) == [{"n": 3}]  # (after the replay: it was handled)
    assert client.llen(reply_to) == 1
