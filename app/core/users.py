"""Where users and their credentials come from: a small interface and a demo store.

Replace the demo store by pointing USER_STORE at any factory `f(settings)` that
returns an object with `authenticate(username, password) -> User | None`
(a database, LDAP, an identity provider...).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

from werkzeug.security import check_password_hash, generate_password_hash

from app.core.tokens import ROLES
from config.settings import Settings, SettingsError


@dataclass(frozen=True)
class User:
    id: str
    name: str
    role: str


class UserStore(Protocol):
    def authenticate(self, username: str, password: str) -> User | None: ...


class DemoUserStore:
    """Users from the DEMO_USERS setting (`name:role:password`), hashed in memory."""

    # pbkdf2 keeps start-up fast for a handful of users; scrypt suits a real store.
    _METHOD = "pbkdf2:sha256:100000"

    def __init__(self, settings: Settings) -> None:
        self._users: dict[str, tuple[User, str]] = {}
        for entry in settings.demo_users:
            parts = entry.split(":", 2)
            if len(parts) != 3 or parts[1] not in ROLES or not parts[0] or not parts[2]:
                raise SettingsError(f"DEMO_USERS entry {parts[0]!r} must be "
                                    f"name:role:password with role in {ROLES}")
            name, role, password = parts
            self._users[name] = (User(id=name, name=name, role=role),
                                 generate_password_hash(password, method=self._METHOD))
        # Unknown names are checked against this hash too, so timing does not tell
        # which user names exist.
        self._dummy_hash = generate_password_hash("not-a-password", method=self._METHOD)

    def authenticate(self, username: str, password: str) -> User | None:
        user, password_hash = self._users.get(username, (None, self._dummy_hash))
        if check_password_hash(password_hash, password) and user is not None:
            return user
        return None


def load_user_store(settings: Settings) -> UserStore:
    module_name, _, attribute = settings.user_store.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise SettingsError(f"USER_STORE {settings.user_store!r} cannot be loaded: {exc}") from exc
    return factory(settings)
