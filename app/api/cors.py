"""CORS for the REST API, from the same CORS_ALLOWED_ORIGINS as the Socket.IO handshake.

Requests without an Origin (curl, servers) and same-origin requests pass. A browser
request from another origin passes only if listed, and otherwise gets 403 JSON
before any view runs, so a disallowed page cannot even trigger a side effect.
"""

from __future__ import annotations

from flask import Flask, request

from app.core.errors import AppError
from config.settings import Settings

ALLOWED_HEADERS = "Authorization, Content-Type"
MAX_AGE = "600"


def _same_origin(origin: str) -> bool:
    scheme = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    return origin == f"{scheme}://{request.host}"


def register_cors(app: Flask, settings: Settings) -> None:
    allowed = set(settings.cors_allowed_origins)
    allow_any = "*" in allowed

    def listed(origin: str) -> bool:
        return allow_any or origin in allowed

    @app.before_request
    def refuse_disallowed_origin():
        origin = request.headers.get("Origin")
        if origin and not (listed(origin) or _same_origin(origin)):
            raise AppError(f"origin {origin[:100]} is not allowed", code="origin_not_allowed",
                           status=403)

    @app.after_request
    def add_cors_headers(response):
        origin = request.headers.get("Origin")
        if origin and listed(origin) and not _same_origin(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers.add("Vary", "Origin")
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
                response.headers["Access-Control-Allow-Methods"] = response.headers.get(
                    "Allow", "GET, POST")
                response.headers["Access-Control-Max-Age"] = MAX_AGE
        return response
