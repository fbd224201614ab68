"""Request helpers for views: the JSON body against a schema, the bearer identity."""

from __future__ import annotations

from typing import Any

from flask import request

from app.core.errors import ForbiddenError, ValidationError
from app.core.schema import Payload, validate
from app.core.tokens import Identity, bearer_token
from app.services import get_services


def json_body(model: type[Payload]) -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None:
        raise ValidationError("the request body must be JSON (Content-Type: application/json)",
                              code="invalid_json")
    return validate(model, body)


def current_identity(role: str | None = None) -> Identity:
    """The identity of the `Authorization: Bearer` token, or a 401/403 error."""
    services = get_services()
    identity = services.tokens.verify(bearer_token(request.headers.get("Authorization")))
    services.revocations.check(identity)
    if role is not None and identity.role != role:
        raise ForbiddenError(f"this endpoint requires the {role!r} role")
    return identity
