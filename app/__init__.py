"""Application factory: a Flask app and a python-socketio server on one port.

`create_app()` returns the Flask app; its `wsgi_app` is replaced by one WSGI
function (app.sockets.server.wrap_wsgi), so `/socket.io/` goes to Socket.IO and
every other path to Flask. Each call builds its own settings, server, manager and
services: two apps in one process share nothing.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from app.adapters import versions
from app.api import register_blueprints
from app.cli import register_commands
from app.core.chat import CHAT_NAMESPACE, room_key
from app.core.history import History
from app.core.idempotency import Claims
from app.core.lifecycle import Lifecycle
from app.core.limits import AttemptLimit
from app.core.presence import Presence
from app.core.revocation import Revocations
from app.core.tokens import TokenService
from app.core.users import load_user_store
from app.logging_setup import configure_logging
from app.services import EXTENSION_KEY, Services
from app.sockets import NAMESPACES, register_namespaces
from app.sockets.server import create_socketio_server, wrap_wsgi
from app.web import admin_ui_bp as admin_ui_blueprint
from app.web import bp as web_blueprint
from config.notices import silence_library_notices
from config.settings import Settings, SettingsError, load_settings


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """Build the application from `settings` (default: the environment) plus overrides."""
    silence_library_notices()  # before python-engineio imports the async library
    if settings is None:
        settings = load_settings(**overrides)
    elif overrides:
        settings = load_settings(environ={}, env_file="",
                                 **{**settings.__dict__, **overrides})
    configure_logging(settings)
    # the hooks of app/adapters are tested with these releases only
    if (problem := versions.refusal(settings.async_mode)) is not None:
        raise SettingsError(problem)

    flask_app = Flask(__name__)
    flask_app.config.update(SECRET_KEY=settings.secret_key,
                            MAX_CONTENT_LENGTH=settings.max_http_buffer_size)
    lifecycle = Lifecycle()
    # namespaces whose room broadcasts are logged (history, recovery: app/core/history.py)
    logged = {ns.path: ns.logged_rooms for ns in NAMESPACES if ns.logged_rooms}
    sio = create_socketio_server(settings, [ns.path for ns in NAMESPACES], lifecycle, logged)
    # Shared across workers through Redis when a queue is configured, else in memory.
    redis = getattr(sio.manager, "publisher", None)
    prefix = settings.message_queue_channel
    services = Services(settings=settings, tokens=TokenService(settings),
                        users=load_user_store(settings), sio=sio, lifecycle=lifecycle,
                        revocations=Revocations(redis, prefix),
                        attempts=AttemptLimit(redis, prefix + ":attempts"),
                        history=History(sio.manager.logs, CHAT_NAMESPACE, room_key),
                        claims=Claims(redis, prefix, settings.idempotency_window_seconds),
                        presence=Presence(redis, prefix))
    services.presence.host = getattr(sio.manager, "host_id", "local")
    flask_app.extensions[EXTENSION_KEY] = services

    register_blueprints(flask_app, settings)
    flask_app.register_blueprint(web_blueprint)  # the demo page at / (app/web/)
    flask_app.register_blueprint(admin_ui_blueprint)  # the Socket.IO Admin UI at /admin-ui/
    register_namespaces(sio, services)
    register_commands(flask_app)
    flask_app.wsgi_app = wrap_wsgi(sio, flask_app.wsgi_app, settings, lifecycle)
    # gunicorn serves that function (wsgi.application); its worker hooks find the
    # services on it as on the Flask app.
    flask_app.wsgi_app.extensions = flask_app.extensions
    return flask_app
