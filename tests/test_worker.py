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


def test_a_draining_worker_exits_once_its_drain_is_done():
    """gunicorn waits for its requests only, and an open WebSocket holds none: its
    `worker_exit` hook must wait for the drain, which notifies and ends them."""
    import threading
    import time

    from app.core.lifecycle import Lifecycle
    from app.services import EXTENSION_KEY
    from app.worker import on_worker_exit

    lifecycle = Lifecycle()
    lifecycle.start_draining()
    order = []
    services = SimpleNamespace(lifecycle=lifecycle, sio=SimpleNamespace(sleep=time.sleep),
                               manager=SimpleNamespace(leave=lambda: order.append("left")))
    worker = SimpleNamespace(wsgi=SimpleNamespace(extensions={EXTENSION_KEY: services}),
                             cfg=SimpleNamespace(graceful_timeout=10))

    def drain_done():
        order.append("drained")
        lifecycle.drained = True

    threading.Timer(0.3, drain_done).start()
    on_worker_exit(worker)
    assert order == ["drained", "left"]
