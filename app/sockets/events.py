"""Payloads of server -> client events, as pydantic models for the AsyncAPI document.

The server does not validate what it emits against these (emits are built in code);
they describe it. A namespace lists its own events in `server_events`
({event name: model}); COMMON_SERVER_EVENTS reach every namespace.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Sender(BaseModel):
    id: str
    name: str


class ChatMessage(BaseModel):
    """A chat message (`room` is the room) or an announcement (`room` is null)."""

    id: str = Field(description="server-assigned, 32 hex characters")
    room: str | None
    text: str
    sender: Sender
    ts: int = Field(description="Unix time in milliseconds")
    stream_id: str | None = Field(None, description="the room history's id, \"<ms>-<n>\", "
                                  "ordered per room: `join` with `since` resumes after it")
    client_id: str | None = Field(None, description="the sender's own id, when it gave one")


class PresenceUser(BaseModel):
    id: str
    name: str


class PresenceChange(BaseModel):
    """A user's first socket entered the room (join) or its last one left (leave)."""

    room: str
    user: PresenceUser
    action: Literal["join", "leave"]


class Kicked(BaseModel):
    """An administrator's kick; the server disconnects the socket next."""

    reason: str
    until: int | None = Field(None, description="with a ban: refused until then (Unix seconds)")


class Shutdown(BaseModel):
    """The worker is stopping: the connection ends, standard clients reconnect by
    themselves (rejoin your rooms on `connect`)."""

    reason: Literal["server_shutdown"]
    reconnect: bool


class TokenExpiring(BaseModel):
    """Sent once per token, TOKEN_WARNING_SECONDS before it expires: get a new token
    (POST /api/auth/refresh) and send `refresh`."""

    expires_in: int
    expires_at: int


class SessionEnded(BaseModel):
    """The socket's token expired or was revoked: the server disconnects next (a banned
    user's socket is told `kicked`)."""

    code: Literal["token_expired", "token_revoked"]
    message: str


# Every namespace: kicks (app/sockets/worker_ops.py), drains (app/sockets/shutdown.py)
# and token lifetime (app/sockets/base.py).
COMMON_SERVER_EVENTS: dict[str, type[BaseModel]] = {
    "kicked": Kicked, "shutdown": Shutdown, "token_expiring": TokenExpiring,
    "session_ended": SessionEnded}

# Ack error codes any event may get (docs/events.md, "Acks").
COMMON_ERRORS = {
    "unknown_event": "the namespace has no such event (details.events lists the known ones)",
    "invalid_payload": "the payload is not an object, a field is missing, of the wrong type or "
                       "out of bounds, an unknown field is present, or more than one argument "
                       "was sent; details maps each field to its problem",
    "queue_unavailable": "the message queue could not be reached: nobody got the message; "
                         "retry",
    "delivery_incomplete": "the message went out but may not have reached every worker: some "
                           "members may have it; retry with the same client_id to complete it",
    "rate_limited": "more than EVENT_RATE events a second; details.retry_after in seconds",
    "token_expired": "the socket's token has expired (send refresh before it does)",
    "banned": "the user was banned: the socket is being ended",
    "token_revoked": "the token was revoked: the socket is being ended",
    "not_authenticated": "the socket has no identity (it is being disconnected)",
    "shutting_down": "the worker is draining: reconnect and send again",
    "internal_error": "the handler failed (logged with a traceback)",
}

# connect_error codes (docs/events.md, "Connecting").
CONNECT_ERRORS = {
    "missing_token": "no token in auth nor in the Authorization header",
    "malformed_token": "not a string, too long, not a JWT, or auth not an object",
    "invalid_token": "bad signature or algorithm, wrong iss/aud, not yet valid, a required "
                     "claim missing, unknown role",
    "token_expired": "exp in the past",
    "forbidden": "a valid token whose role the namespace does not accept",
    "token_in_query": "a ?token= in the URL while ALLOW_QUERY_TOKEN is off",
    "banned": "the user is banned; details.until",
    "token_revoked": "the token was revoked (logout)",
    "shutting_down": "the worker is draining: connect again",
    "internal_error": "the server failed (logged with a traceback)",
    "invalid_credentials": "/admin-ui: the Admin UI's username and password are missing or wrong",
    "rate_limited": "/admin-ui: too many sign-ins from this address or failed ones for this user",
}
