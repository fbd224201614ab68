"""The template with one more namespace, /greet, whose connect handler emits to the
connecting socket (tests/security/test_protocol.py):

    start_own_server(app="tests.security.greeting_app:create()")
"""

from __future__ import annotations

from app import create_app
from app.core.chat import user_room
from app.core.errors import ForbiddenError
from app.services import EXTENSION_KEY
from app.sockets.base import BaseNamespace

REFUSED_USER = "refused-after-greeting"


class GreetNamespace(BaseNamespace):
    path = "/greet"

    def on_connected(self, sid, identity) -> None:
        self.emit("welcome", {"to": "sid"}, to=sid)
        self.emit("welcome", {"to": "user"}, room=user_room(identity.id))
        if identity.id == REFUSED_USER:
            raise ForbiddenError("greeted, then refused")


def create():
    """The WSGI application (a factory: importing this module builds nothing)."""
    app = create_app()
    services = app.extensions[EXTENSION_KEY]
    services.sio.namespaces.append(GreetNamespace.path)
    services.sio.register_namespace(GreetNamespace(services))
    return app.wsgi_app
