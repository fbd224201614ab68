"""One gunicorn, several workers (WebSocket only): clients on different workers share rooms."""

from __future__ import annotations

from tests.helpers import chat_connections_per_worker, wait_for


def test_clients_on_different_workers_of_one_gunicorn_share_room_messages(
        private_redis, start_own_server, connect):
    server = start_own_server(MESSAGE_QUEUE_URL=private_redis.url, WORKERS="2",
                              TRANSPORTS="websocket")
    clients = [connect(server.url, user=f"w{i}") for i in range(12)]
    admin = connect(server.url, ["/admin"], user="root", role="admin")
    # every worker has subscribed once a client reached it; wait for both to answer
    counts = wait_for(lambda: len(c := chat_connections_per_worker(admin)) == 2 and c,
                      message="both workers to hold clients")
    assert all(count > 0 for count in counts.values()), counts
    for client in clients:
        client.call("join", {"room": "workers"})

    for sender in clients[:3]:
        sender.call("message", {"room": "workers", "text": f"from {sender.sio.get_sid('/chat')}"})

    for i, client in enumerate(clients):
        expected = 3 - (1 if i < 3 else 0)  # senders are skipped for their own message
        wait_for(lambda c=client, n=expected: len(c.of("message")) == n,
                 message=f"client {i} to get {expected} messages")
