"""gunicorn worker hooks (app/worker.py) on real sockets."""

from __future__ import annotations

import socket
from types import SimpleNamespace

from app.worker import prepare_connections


def accepted_pair():
    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(listener.getsockname())
    client, addr = listener.accept()
    return listener, peer, client, addr


def test_accepted_connections_do_not_wait_for_acks():
    listener, peer, client, addr = accepted_pair()
    handled = []
    worker = SimpleNamespace(handle=lambda *args: handled.append(args))
    prepare_connections(worker)
    assert not client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    worker.handle(listener, client, addr)
    assert handled == [(listener, client, addr)]
    assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    for s in (listener, peer, client):
        s.close()


def test_a_connection_accepted_as_the_listener_closed_is_closed_not_handled():
    listener, peer, client, addr = accepted_pair()
    handled = []
    worker = SimpleNamespace(handle=lambda *args: handled.append(args))
    prepare_connections(worker)
    listener.close()
    worker.handle(listener, client, addr)
    assert handled == []
    assert client.fileno() == -1  # closed: the client retries elsewhere
    peer.close()
