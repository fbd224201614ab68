"""Tokens: sign in, refresh, sign out (demo login against the configured user store).

    POST /api/auth/token    {username, password}  -> access + refresh token
    POST /api/auth/refresh  {refresh_token}       -> a new pair; the old refresh token
                                                     is used up (rotation: a second use
                                                     is refused)
    POST /api/auth/logout   Bearer access token, {refresh_token?} -> 204; both tokens
                                                     revoked, live sockets on them ended

Login attempts are limited per client address (LOGIN_ATTEMPTS_PER_ADDRESS a minute)
and failed ones per username (LOGIN_FAILURES_PER_USER a minute), across workers with
Redis: over them, 429 `rate_limited` with Retry-After, before any password is hashed.
Hashing runs in the async library's thread pool, never on the event loop.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Annotated

from flask import Blueprint, request
from pydantic import StringConstraints

from app.api.requests import current_identity, json_body
from app.core.errors import AuthError, QueueUnavailable
from app.core.limits import client_address
from app.core.offload import run_blocking
from app.core.revocation import REVOKED
from app.core.schema import Payload
from app.core.tokens import REFRESH, Identity
from app.core.users import User
from app.services import Services, get_services

bp = Blueprint("auth", __name__)

RefreshToken = Annotated[str, StringConstraints(min_length=1, max_length=8192)]


class LoginBody(Payload):
    username: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class RefreshBody(Payload):
    refresh_token: RefreshToken


class LogoutBody(Payload):
    refresh_token: RefreshToken = None  # optional; an explicit null is refused, as before


def token_pair(services: Services, user_id: str, name: str, role: str,
               family: str | None = None) -> dict:
    """An access and a refresh token of one family: a new one at sign-in, the same
    through every refresh."""
    tokens, fam = services.tokens, family or uuid.uuid4().hex
    return {"access_token": tokens.issue(user_id, name, role, fam=fam), "token_type": "Bearer",
            "expires_in": tokens.ttl,
            "refresh_token": tokens.issue(user_id, name, role, kind=REFRESH, fam=fam),
            "refresh_expires_in": tokens.refresh_ttl,
            "user": {"id": user_id, "name": name, "role": role}}


@bp.post("/auth/token")
def issue_token():
    credentials = json_body(LoginBody)
    services = get_services()
    address = client_address(request.environ, services.settings.proxy_hops)
    user = sign_in(services, credentials["username"], credentials["password"], address)
    return token_pair(services, user.id, user.name, user.role)


def sign_in(services: Services, username: str, password: str, address: str) -> User:
    """The user of these credentials, within the login limits (here and for the Admin
    UI's sign-in, app/sockets/admin_ui.py); AuthError if they are wrong."""
    settings, attempts = services.settings, services.attempts
    attempts.check(f"address:{address}", settings.login_attempts_per_address, "login attempts")
    failures_key = f"user:{username}"
    attempts.check(failures_key, settings.login_failures_per_user, "failed logins", add=0)
    user = run_blocking(services.users.authenticate, username, password)
    if user is None:
        attempts.count(failures_key)
        raise AuthError("wrong username or password", code="invalid_credentials")
    # no token for a banned user (told only once the password is right)
    services.revocations.check(Identity(id=user.id, name=user.name, role=user.role, expires_at=0))
    return user


@bp.post("/auth/refresh")
def refresh_token():
    body = json_body(RefreshBody)
    services = get_services()
    identity = services.tokens.verify(body["refresh_token"], kind=REFRESH)
    try:
        services.revocations.check(identity)  # (a used refresh token is a revoked one)
        reused = not services.revocations.use_once(identity.jti, identity.expires_at)
    except AuthError as exc:
        if exc.code != REVOKED:
            raise
        reused = True
    if reused:
        # a used refresh token again: stolen, or its owner's copy was. Every token of its
        # family goes (RFC 9700, 4.14.2), live sockets included, on every worker.
        until = time.time() + services.tokens.refresh_ttl
        services.revocations.revoke_family(identity.family, until)
        if identity.family:
            with contextlib.suppress(QueueUnavailable):
                services.sio.manager.control.run("revoke", {"family": identity.family,
                                                            "until": until})
        raise AuthError("this refresh token was already used: sign in again",
                        code="token_revoked")
    return token_pair(services, identity.id, identity.name, identity.role, identity.family)


@bp.post("/auth/logout")
def logout():
    identity = current_identity()
    body = json_body(LogoutBody) if request.content_length else {}
    services = get_services()
    revoked = [(identity.jti, identity.expires_at)]
    if body.get("refresh_token"):
        refresh = services.tokens.verify(body["refresh_token"], kind=REFRESH)
        if refresh.id != identity.id:
            raise AuthError("the refresh token is another user's", code="identity_mismatch",
                            status=403)
        revoked.append((refresh.jti, refresh.expires_at))
    for jti, until in revoked:
        services.revocations.revoke(jti, until)
    if identity.jti and identity.expires_at > time.time():
        # live sockets on the access token end now on every worker (if the queue is
        # down, the token is still refused at connect and on REST: stored above)
        with contextlib.suppress(QueueUnavailable):
            services.sio.manager.control.run("revoke", {"jti": identity.jti,
                                                        "until": identity.expires_at})
    return "", 204
