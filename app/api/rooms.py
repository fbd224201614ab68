"""POST /api/rooms/<room>/messages: REST reaching Socket.IO clients, on every worker.

The same rules as the socket's `message` event: the same payload schema (`text`), the
same rate (EVENT_RATE a second, per user, across workers with Redis), and a posting
policy: one of the user's sockets (on any worker) must be in the room, or the user has
the admin role (for jobs and back offices).
"""

from __future__ import annotations

from flask import Blueprint

from app.api.requests import current_identity, json_body
from app.core.chat import RoomPayload, post_message, text_model
from app.core.errors import ForbiddenError, QueueUnavailable
from app.core.schema import validate
from app.services import Services, get_services

bp = Blueprint("rooms", __name__)

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
    body = json_body(text_model(settings.max_message_length))
    services.attempts.check(f"rest-message:{identity.id}", int(settings.event_rate), "messages",
                            window=1.0)
    if not identity.is_admin:
        require_member(services, identity.id, room)
    message = post_message(services.sio, room, body["text"], identity.public())
    return {"message": message}, 201
