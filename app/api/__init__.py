"""REST API under /api: add a blueprint to BLUEPRINTS (one line) and it is registered."""

from __future__ import annotations

from flask import Flask

from app.api import auth, health, rooms
from app.api.cors import register_cors
from app.api.errors import register_error_handlers
from app.api.headers import register_security_headers
from config.settings import Settings

URL_PREFIX = "/api"
BLUEPRINTS = (health.bp, auth.bp, rooms.bp)


def register_blueprints(app: Flask, settings: Settings) -> None:
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint, url_prefix=URL_PREFIX)
    register_error_handlers(app)
    register_cors(app, settings)
    register_security_headers(app)
