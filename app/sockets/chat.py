"""/chat: rooms and messages between authenticated users.

Client -> server events (each acks {"ok": true, ...} or {"ok": false, "error": ...}):
  join     {room}                      -> {room}
  leave    {room}                      -> {room}
  message  {room, text, echo?=false}   -> {message}
Server -> client events:
  message       {id, room, text, sender: {id, name}, ts}
  announcement  {id, room: null, text, sender, ts}       (from /admin broadcast)
  kicked        {reason}                                  (then disconnect)
"""

from __future__ import annotations

from app.core.chat import (
    ANNOUNCEMENT_EVENT,
    CHAT_NAMESPACE,
    MESSAGE_EVENT,
    Room,
    RoomPayload,
    Text,
    post_message,
    room_key,
)
from app.core.errors import AppError
from app.core.schema import Payload
from app.sockets.base import BaseNamespace, EventContext, on_event
from app.sockets.events import ChatMessage

ROOM_SCHEMA = RoomPayload


def message_schema(settings):
    class Message(Payload):
        room: Room
        text: Text(settings.max_message_length)
        echo: bool = False

    return Message


class ChatNamespace(BaseNamespace):
    path = CHAT_NAMESPACE
    server_events = {MESSAGE_EVENT: ChatMessage, ANNOUNCEMENT_EVENT: ChatMessage}
    error_codes = {"not_in_room": "join the room first (leave, message)",
                   "too_many_rooms": "join: the socket is in MAX_ROOMS_PER_SOCKET rooms"}

    def __init__(self, services) -> None:
        super().__init__(services)
        # sid -> chat rooms joined (python-socketio can only count them by scanning
        # every room): bounded by MAX_ROOMS_PER_SOCKET
        self.room_counts: dict[str, int] = {}

    @on_event("join", schema=ROOM_SCHEMA)
    def join(self, ctx: EventContext, payload: dict) -> dict:
        key = room_key(payload["room"])
        if not self.is_member(ctx.sid, key):
            joined = self.room_counts.get(ctx.sid, 0)
            if joined >= self.settings.max_rooms_per_socket:
                raise AppError(f"a socket may be in {joined} rooms at most: leave one first",
                               code="too_many_rooms", status=429)
            self.enter_room(ctx.sid, key)
            self.room_counts[ctx.sid] = joined + 1
        return {"room": payload["room"]}

    @on_event("leave", schema=ROOM_SCHEMA)
    def leave(self, ctx: EventContext, payload: dict) -> dict:
        self._require_member(ctx.sid, payload["room"])
        self.leave_room(ctx.sid, room_key(payload["room"]))
        self.room_counts[ctx.sid] -= 1
        return {"room": payload["room"]}

    def on_disconnected(self, sid, identity, reason) -> None:
        self.room_counts.pop(sid, None)

    @on_event("message", schema=message_schema)
    def message(self, ctx: EventContext, payload: dict) -> dict:
        room = payload["room"]
        self._require_member(ctx.sid, room)
        # The sender gets the message in its ack; `echo` also delivers the event to
        # it like to any member (skip_sid=None), e.g. for a client that renders only events.
        message = post_message(self.server, room, payload["text"], ctx.user.public(),
                               skip_sid=None if payload["echo"] else ctx.sid)
        return {"message": message}

    def _require_member(self, sid: str, room: str) -> None:
        if not self.is_member(sid, room_key(room)):
            raise AppError(f"join room {room!r} first", code="not_in_room", status=403)
