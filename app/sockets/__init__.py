"""Socket.IO namespaces: add yours to NAMESPACES (one line) and it is registered."""

from __future__ import annotations

import socketio

from app.services import Services
from app.sockets.admin import AdminNamespace
from app.sockets.admin_ui import AdminFeed, AdminUiNamespace
from app.sockets.chat import ChatNamespace
from app.sockets.worker_ops import register_worker_ops

NAMESPACES = (ChatNamespace, AdminNamespace, AdminUiNamespace)


def register_namespaces(sio: socketio.Server, services: Services) -> None:
    # the Admin UI's live events, published only while one watches (app/sockets/admin_ui.py)
    sio.admin_feed = sio.manager.admin_feed = AdminFeed(sio, services.settings.admin_ui_interval)
    for namespace_class in NAMESPACES:
        sio.register_namespace(namespace_class(services))
    register_worker_ops(sio, services)
