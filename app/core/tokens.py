"""Issuing and verifying the JWTs that authenticate REST calls and Socket.IO connects."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import jwt

from app.adapters.jwt_hooks import hmac_codec
from app.core.errors import AuthError
from config.settings import Settings

ROLES = ("user", "admin")
ACCESS, REFRESH = "access", "refresh"
# The Admin UI's session (app/sockets/admin_ui.py): accepted by /admin-ui alone.
ADMIN_UI_SESSION = "admin-ui"
KIND_NAMES = {ACCESS: "an access", REFRESH: "a refresh", ADMIN_UI_SESSION: "an Admin UI session"}


@dataclass(frozen=True)
class Identity:
    """Who is on the other end: read from a verified token, kept in the socket session."""

    id: str
    name: str
    role: str
    expires_at: int
    jti: str = ""  # the token's id (revocable); empty for tokens issued without one
    # the sign-in this token descends from (every refresh keeps it): a refresh token
    # used twice revokes the whole family (RFC 9700, 4.14.2)
    family: str = ""

    def refreshed(self, other: Identity) -> Identity:
        """This identity with a later token's expiry and id: the same user and role only."""
        if (other.id, other.role) != (self.id, self.role):
            raise AuthError("the new token is for another user or role", code="identity_mismatch",
                            status=403)
        return replace(self, name=other.name, expires_at=other.expires_at, jti=other.jti,
                       family=other.family)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def public(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name}


class TokenService:
    def __init__(self, settings: Settings) -> None:
        self._key = settings.jwt_secret
        self._algorithm = settings.jwt_algorithm
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._ttl = settings.jwt_ttl_seconds
        self._refresh_ttl = settings.refresh_ttl_seconds
        self._leeway = settings.jwt_leeway_seconds
        self._max_length = settings.max_token_length
        self._codec = hmac_codec(self._algorithm, self._key)

    @property
    def ttl(self) -> int:
        return self._ttl

    @property
    def refresh_ttl(self) -> int:
        return self._refresh_ttl

    def issue(self, user_id: str, name: str, role: str, *, kind: str = ACCESS,
              **extra: Any) -> str:
        """An access token (default) or a refresh token, each with its own `jti`."""
        now = int(time.time())
        ttl = self._refresh_ttl if kind == REFRESH else self._ttl
        claims = {"sub": user_id, "name": name, "role": role, "iat": now, "exp": now + ttl,
                  "iss": self._issuer, "aud": self._audience, "jti": uuid.uuid4().hex,
                  "typ": kind, **extra}
        return self._codec.encode(claims, self._key, algorithm=self._algorithm)

    def verify(self, token: Any, kind: str = ACCESS) -> Identity:
        """Return the identity in `token` or raise AuthError with a precise code.

        Only the configured HMAC algorithm is accepted, so `alg: none` and
        algorithm-confusion tokens fail signature checks by construction. A refresh
        token is accepted only where `kind` asks for one, and never as an access token
        (a token without `typ` is an access token).
        """
        if token is None or token == "":
            raise AuthError("no token was sent", code="missing_token")
        if not isinstance(token, str):
            raise AuthError("the token must be a string", code="malformed_token")
        if len(token) > self._max_length:
            raise AuthError("the token is too long", code="malformed_token")
        try:
            claims = self._codec.decode(
                token, self._key, algorithms=[self._algorithm], audience=self._audience,
                issuer=self._issuer, leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired", code="token_expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("the token is not valid yet", code="invalid_token") from None
        except jwt.InvalidAudienceError:
            raise AuthError("the token is for another audience", code="invalid_token") from None
        except jwt.InvalidIssuerError:
            raise AuthError("the token is from another issuer", code="invalid_token") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"the token lacks the {exc.claim!r} claim",
                            code="invalid_token") from None
        except jwt.DecodeError as exc:
            # Signature failures are DecodeError subclasses: tell them apart from garbage.
            if isinstance(exc, jwt.InvalidSignatureError):
                raise AuthError("the token signature is invalid", code="invalid_token") from None
            raise AuthError("the token is not a well-formed JWT",
                            code="malformed_token") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError("the token algorithm is not accepted", code="invalid_token") from None
        except jwt.InvalidTokenError:
            raise AuthError("the token is invalid", code="invalid_token") from None
        sub, name, role = claims.get("sub"), claims.get("name", claims.get("sub")), claims.get("role")
        if not isinstance(sub, str) or not sub or not isinstance(name, str) or role not in ROLES:
            raise AuthError("the token claims are malformed", code="invalid_token")
        if claims.get("typ", ACCESS) != kind:
            raise AuthError(f"this is not {KIND_NAMES.get(kind, 'a ' + kind)} token",
                            code="invalid_token")
        jti, family = claims.get("jti", ""), claims.get("fam", "")
        return Identity(id=sub, name=name, role=role, expires_at=int(claims["exp"]),
                        jti=jti if isinstance(jti, str) else "",
                        family=family if isinstance(family, str) else "")


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None
