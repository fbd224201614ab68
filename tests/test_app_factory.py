"""create_app(): one port for HTTP and Socket.IO, and nothing shared between two apps."""

from __future__ import annotations

import json

from app import create_app
from app.api import BLUEPRINTS
from app.sockets import NAMESPACES


def test_two_apps_share_no_state(settings):
    first, second = create_app(settings), create_app(settings, max_message_length=10)
    one, two = first.extensions["realtime"], second.extensions["realtime"]
    assert one.sio is not two.sio and one.sio.manager is not two.sio.manager
    assert one.tokens is not two.tokens and one.users is not two.users
    assert one.sio.namespace_handlers["/chat"] is not two.sio.namespace_handlers["/chat"]
    assert one.settings.max_message_length == 2000 and two.settings.max_message_length == 10
    # state in one app (a connected identity) is not visible in the other
    one.sio.namespace_handlers["/chat"].identities["sid"] = object()
    assert two.sio.namespace_handlers["/chat"].identities == {}


def test_every_registry_entry_is_registered(app):
    services = app.extensions["realtime"]
    assert set(services.sio.namespace_handlers) == {ns.path for ns in NAMESPACES}
    assert {bp.name for bp in BLUEPRINTS} <= set(app.blueprints)


def test_socketio_and_flask_share_the_wsgi_callable(app, http):
    # one WSGI callable: /socket.io/ reaches this app's python-socketio server...
    opened = http.get("/socket.io/?EIO=4&transport=polling")
    assert opened.status_code == 200 and opened.get_data(as_text=True).startswith("0{")
    sid = json.loads(opened.get_data(as_text=True)[1:])["sid"]
    assert sid in app.extensions["realtime"].sio.eio.sockets
    # ...and every other path reaches Flask
    assert http.get("/api/health").get_json()["status"] == "ok"
