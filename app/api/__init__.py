"""REST API under /api: add a blueprint to BLUEPRINTS (one line) and it is registered.

GET /metrics (app/api/metrics.py) sits outside /api, where Prometheus looks by default.
"""

from __future__ import annotations

from flask import Flask

from app.api import asyncapi, auth, health, metrics, rooms
from app.api.cors import register_cors
from app.api.errors import register_error_handlers
from app.api.headers import register_security_headers
from config.settings import Settings

URL_PREFIX = "/api"
BLUEPRINTS = (health.bp, auth.bp, rooms.bp)


def register_blueprints(app: Flask, settings: Settings) -> None:
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint, url_prefix=URL_PREFIX)
    if settings.asyncapi_access != "off":
        app.register_blueprint(asyncapi.bp, url_prefix=URL_PREFIX)
    if settings.metrics_enabled:
        app.register_blueprint(metrics.bp)
    register_error_handlers(app)
    register_cors(app, settings)
    register_security_headers(app)
