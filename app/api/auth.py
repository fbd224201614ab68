"""POST /api/auth/token: exchange a username and password for a signed JWT (demo login)."""

from __future__ import annotations

from flask import Blueprint

from app.api.requests import json_body
from app.core.errors import AuthError
from app.core.schema import Field, Schema
from app.services import get_services

bp = Blueprint("auth", __name__)

LOGIN_SCHEMA = Schema(username=Field(str, min_length=1, max_length=128),
                      password=Field(str, min_length=1, max_length=1024))


@bp.post("/auth/token")
def issue_token():
    credentials = json_body(LOGIN_SCHEMA)
    services = get_services()
    user = services.users.authenticate(credentials["username"], credentials["password"])
    if user is None:
        raise AuthError("wrong username or password", code="invalid_credentials")
    token = services.tokens.issue(user.id, user.name, user.role)
    return {"access_token": token, "token_type": "Bearer", "expires_in": services.tokens.ttl,
            "user": {"id": user.id, "name": user.name, "role": user.role}}
