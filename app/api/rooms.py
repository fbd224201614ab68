"""POST /api/rooms/<room>/messages: REST reaching Socket.IO clients, on every worker."""

from __future__ import annotations

from flask import Blueprint

from app.api.requests import current_identity, json_body
from app.core.chat import post_message, room_field, text_field
from app.core.schema import Schema
from app.services import get_services

bp = Blueprint("rooms", __name__)

ROOM = Schema(room=room_field())


@bp.post("/rooms/<room>/messages")
def create_message(room: str):
    identity = current_identity()
    services = get_services()
    ROOM.validate({"room": room})
    body = json_body(Schema(text=text_field(services.settings.max_message_length)))
    message = post_message(services.sio, room, body["text"], identity.public())
    return {"message": message}, 201
