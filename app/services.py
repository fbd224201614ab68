"""The per-application service container: one per create_app(), nothing global."""

from __future__ import annotations

from dataclasses import dataclass

import socketio
from flask import current_app

from app.core.history import History
from app.core.idempotency import Claims
from app.core.lifecycle import Lifecycle
from app.core.limits import AttemptLimit
from app.core.presence import Presence
from app.core.revocation import Revocations
from app.core.tokens import TokenService
from app.core.users import UserStore
from config.settings import Settings


@dataclass(frozen=True)
class Services:
    settings: Settings
    tokens: TokenService
    users: UserStore
    sio: socketio.Server
    lifecycle: Lifecycle
    revocations: Revocations  # bans and revoked tokens
    attempts: AttemptLimit  # login attempts
    history: History  # recent messages per room
    claims: Claims  # client message ids already sent (exactly-once `message`)
    presence: Presence  # who is in each room, on every worker

    def post_message(self, room: str, text: str, sender: dict, **options):
        """app.core.chat.post_message with this app's history and claims."""
        from app.core.chat import post_message

        return post_message(self.sio, room, text, sender, history=self.history,
                            claims=self.claims, **options)

    @property
    def manager(self):
        """The client manager: in-memory or the Redis queue (see app/core/queue)."""
        return self.sio.manager


EXTENSION_KEY = "realtime"


def get_services() -> Services:
    """The services of the Flask app handling the current request or CLI command."""
    return current_app.extensions[EXTENSION_KEY]
