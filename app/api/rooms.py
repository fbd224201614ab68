"""POST /api/rooms/<room>/messages: REST reaching Socket.IO clients, on every worker;
GET its messages and presence (EVENT_RATE reads a second per user).

The same rules as the socket's `message` event: the same payload schema (`text`), the
same rate (EVENT_RATE a second, per user, across workers with Redis), and a posting
policy: one of the user's sockets (on any worker) must be in the room, or the user has
the admin role (for jobs and back offices).
"""

from __future__ import annotations

from functools import cache
from typing import Annotated

from flask import Blueprint, request
from pydantic import StringConstraints

from app.api.requests import current_identity, json_body
from app.core.chat import ClientId, RoomPayload, StreamId, text_model
from app.core.errors import ForbiddenError, QueueUnavailable
from app.core.schema import Payload, validate
from app.services import Services, get_services

bp = Blueprint("rooms", __name__)



class HistoryQuery(Payload):
    after: StreamId | None = None
    limit: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,2}$")] = "50"


@cache
def message_model(max_length: int) -> type[Payload]:
    """The `message` event's fields that make sense over REST."""

    class RestMessage(text_model(max_length)):
        client_id: ClientId | None = None

    return RestMessage


def limit_reads(services: Services, user_id: str) -> None:
    """EVENT_RATE reads a second per user, across workers with Redis: each read asks
    every worker whether the user is in the room."""
    services.attempts.check(f"rest-read:{user_id}", int(services.settings.event_rate),
                            "requests", window=1.0)


def require_member(services: Services, user_id: str, room: str) -> None:
    answers = services.sio.manager.control.run("member", {"user_id": user_id, "room": room})
    if any(isinstance(a, dict) and a.get("member") for a in answers):
        return
    if any(isinstance(a, dict) and "error" in a for a in answers):
        raise QueueUnavailable("could not ask every worker whether you are in the room")
    raise ForbiddenError(f"join room {room!r} from a socket first", code="not_in_room")


@bp.post("/rooms/<room>/messages")
def create_message(room: str):
    identity = current_identity()
    services = get_services()
    settings = services.settings
    validate(RoomPayload, {"room": room})
    body = json_body(message_model(settings.max_message_length))
    services.attempts.check(f"rest-message:{identity.id}", int(settings.event_rate), "messages",
                            window=1.0)
    if not identity.is_admin:
        require_member(services, identity.id, room)
    message = services.post_message(room, body["text"], identity.public(),
                                    client_id=body["client_id"])
    return {"message": message}, 201


@bp.get("/rooms/<room>/presence")
def room_presence(room: str):
    """Who is in the room, on every worker: [{id, name, sockets}] (members only)."""
    identity = current_identity()
    services = get_services()
    validate(RoomPayload, {"room": room})
    limit_reads(services, identity.id)
    if not identity.is_admin:
        require_member(services, identity.id, room)
    return {"room": room, "members": services.presence.members(room)}


@bp.get("/rooms/<room>/messages")
def list_messages(room: str):
    """?after=<stream_id>&limit=<n>: the room's messages after an id (members only)."""
    identity = current_identity()
    services = get_services()
    validate(RoomPayload, {"room": room})
    query = validate(HistoryQuery, dict(request.args))
    limit_reads(services, identity.id)
    if not identity.is_admin:
        require_member(services, identity.id, room)
    limit = int(query["limit"])
    if query["after"] is None:
        return {"messages": services.history.recent(room, limit)}
    messages, complete = services.history.after(room, query["after"], limit + 1)
    return {"messages": messages[:limit], "complete": complete, "more": len(messages) > limit}
