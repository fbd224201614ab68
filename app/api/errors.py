"""Every HTTP error is JSON: {"error": {"code", "message", "details"?}}. No HTML, no traces."""

from __future__ import annotations

import logging
import math

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from app.core.errors import AppError, AuthError

log = logging.getLogger("app.api")


def error_response(status: int, code: str, message: str, details=None):
    error = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    response = jsonify(error=error)
    response.status_code = status
    return response


def _app_error(exc: AppError):
    response = error_response(exc.status, exc.code, exc.message, exc.details)
    if isinstance(exc, AuthError):
        response.headers["WWW-Authenticate"] = f'Bearer error="{exc.code}"'
    if exc.status == 429 and isinstance(exc.details, dict) and "retry_after" in exc.details:
        response.headers["Retry-After"] = str(math.ceil(exc.details["retry_after"]))
    return response


def _http_error(exc: HTTPException):
    code = (exc.name or "error").lower().replace(" ", "_")
    response = error_response(exc.code or 500, code, exc.description or exc.name)
    if exc.code == 405 and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _unexpected(exc: Exception):
    log.exception("unhandled error")
    return error_response(500, "internal_error", "the server failed to handle this request")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(AppError, _app_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
