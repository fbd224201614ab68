"""One gunicorn, several workers (WebSocket only): clients spread over the workers and
share rooms; one server owns its port (a second one, or another program, is refused)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.helpers import ROOT, chat_connections_per_worker, process_environment, wait_for


def test_clients_on_different_workers_of_one_gunicorn_share_room_messages(
        private_redis, start_own_server, connect):
    server = start_own_server(MESSAGE_QUEUE_URL=private_redis.url, WORKERS="2",
                              TRANSPORTS="websocket")
    clients = [connect(server.url, user=f"w{i}") for i in range(12)]
    admin = connect(server.url, ["/admin"], user="root", role="admin")

    # every worker has subscribed once a client reached it; wait for both to answer.
    # (A worker still booting when the first clients came gets none of them: the
    # kernel spreads connections over the listening workers. More come until both
    # hold some, as a client population would.)
    def both_hold_clients():
        counts = chat_connections_per_worker(admin)
        if len(counts) == 2 and all(count > 0 for count in counts.values()):
            return counts
        if len(clients) < 60:
            clients.append(connect(server.url, user=f"w{len(clients)}"))
        return None

    counts = wait_for(both_hold_clients, message="both workers to hold clients")
    assert all(count > 0 for count in counts.values()), counts
    for client in clients:
        client.call("join", {"room": "workers"})

    for sender in clients[:3]:
        sender.call("message", {"room": "workers", "text": f"from {sender.sio.get_sid('/chat')}"})

    for i, client in enumerate(clients):
        expected = 3 - (1 if i < 3 else 0)  # senders are skipped for their own message
        wait_for(lambda c=client, n=expected: len(c.of("message")) == n,
                 message=f"client {i} to get {expected} messages")


# --- one owner per port ------------------------------------------------------
# Longest a refused start may take: gunicorn's own retries took 5 s (WORKERS=1) or
# never ended (workers restarted forever, WORKERS>1); the check answers in well under 1.
PROMPT = 4.0


def run_refused(port: int, workers: str) -> tuple[int, str]:
    """Start a second server on `port`; it must exit by itself: (exit code, its log)."""
    env = process_environment(BIND=f"127.0.0.1:{port}", WORKERS=workers,
                              TRANSPORTS="websocket" if workers != "1" else "websocket,polling",
                              MESSAGE_QUEUE_URL="redis://127.0.0.1:1/0")
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = process.communicate(timeout=PROMPT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the master and any worker it started
        log, _ = process.communicate()
        raise AssertionError(f"the second server kept running:\n{log}") from None
    return process.returncode, log


@pytest.mark.parametrize(("first", "second"), [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")])
def test_a_second_server_on_a_served_port_exits_at_once_with_a_clear_error(
        private_redis, start_own_server, connect, first, second):
    server = start_own_server(MESSAGE_QUEUE_URL=private_redis.url, WORKERS=first,
                              TRANSPORTS="websocket" if first != "1" else "websocket,polling")

    code, log = run_refused(server.port, second)

    assert code != 0
    assert f"http://127.0.0.1:{server.port} is already served by another instance" in log
    assert "Booting worker" not in log
    # the first server still has every connection
    clients = [connect(server.url, user=f"o{i}") for i in range(6)]
    assert all(client.sio.connected for client in clients)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_held_by_another_program_is_one_clear_error_not_a_restart_loop(workers):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        code, log = run_refused(holder.getsockname()[1], workers)

    assert code != 0
    assert "cannot listen on http://127.0.0.1:" in log and "Address already in use" in log
    assert "Booting worker" not in log


def test_a_multi_worker_server_logs_its_address(private_redis, start_own_server):
    server = start_own_server(MESSAGE_QUEUE_URL=private_redis.url, WORKERS="2",
                              TRANSPORTS="websocket")
    assert (f"Listening at: http://127.0.0.1:{server.port} (SO_REUSEPORT: one socket per "
            "worker)") in server.log()
