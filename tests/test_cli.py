"""`flask --app wsgi emit ROOM TEXT`: an external process reaching clients through Redis."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT, process_environment


def flask_emit(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "emit", *args],
                          cwd=ROOT, env=process_environment(**env), capture_output=True,
                          text=True, timeout=60)


def test_emit_reaches_clients_on_every_process(cluster, redis_server, connect):
    clients = [connect(server.url, user=f"cli{i}") for i, server in enumerate(cluster)]
    for client in clients:
        client.call("join", {"room": "ops"})

    result = flask_emit("ops", "deploy finished", "--sender", "deploybot",
                        MESSAGE_QUEUE_URL=redis_server.url)

    assert result.returncode == 0, result.stderr
    message = json.loads(result.stdout)
    assert message["sender"] == {"id": "system", "name": "deploybot"}
    for client in clients:
        assert client.wait_event("message") == [message]


def test_emit_without_a_queue_explains_why_it_cannot_work():
    result = flask_emit("ops", "hello")
    assert result.returncode == 1
    assert "MESSAGE_QUEUE_URL" in result.stderr


def test_emit_refuses_an_invalid_room(redis_server):
    result = flask_emit("not a room", "hello", MESSAGE_QUEUE_URL=redis_server.url)
    assert result.returncode == 1
    assert "invalid_payload" in result.stderr and "room" in result.stderr


def test_emit_with_no_server_listening_says_nobody_would_receive_it(private_redis):
    result = flask_emit("ops", "hello", MESSAGE_QUEUE_URL=private_redis.url)
    assert result.returncode == 1
    assert "no server is subscribed" in result.stderr


def test_emit_with_redis_down_is_a_clear_error(private_redis):
    private_redis.stop()
    result = flask_emit("ops", "hello", MESSAGE_QUEUE_URL=private_redis.url)
    assert result.returncode == 1
    assert "Error" in result.stderr and "Traceback" not in result.stderr


def test_emit_prints_no_library_notices(private_redis):
    """(eventlet's 9-line deprecation notice came with every run.) Python's default
    warning filters here, not the tests' quiet ones."""
    env = process_environment(MESSAGE_QUEUE_URL=private_redis.url)
    env.pop("PYTHONWARNINGS")
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "emit", "ops", "hi"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert "no server is subscribed" in result.stderr  # it ran, to the end
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
