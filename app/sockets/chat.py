"""/chat: rooms and messages between authenticated users.

Client -> server events (each acks {"ok": true, ...} or {"ok": false, "error": ...}):
  join     {room, since?}              -> {room, history: [...], complete?, more?}
             history: the room's last HISTORY_ON_JOIN messages, or with `since` (a
             stream_id) those after it; complete false: some were lost (resync)
  leave    {room}                      -> {room}
  message  {room, text, echo?=false, client_id?}   -> {message}
             a retry with the same client_id gets the first message back, and it is
             delivered once
Server -> client events:
  message       {id, room, text, sender: {id, name}, ts, stream_id, client_id?}
  announcement  {id, room: null, text, sender, ts}       (from /admin broadcast)
  kicked        {reason}                                  (then disconnect)
"""

from __future__ import annotations

from app.core.chat import (
    CHAT_NAMESPACE,
    CLIENT_ID_PATTERN,
    PRESENCE_EVENT,
    STREAM_ID_PATTERN,
    presence_event,
    room_field,
    room_key,
    text_field,
)
from app.core.errors import AppError
from app.core.schema import Field, Schema
from app.sockets.base import BaseNamespace, EventContext, on_event

ROOM_SCHEMA = Schema(room=room_field())
JOIN_SCHEMA = Schema(room=room_field(),
                     since=Field(str, required=False, max_length=41, pattern=STREAM_ID_PATTERN))


def message_schema(settings):
    return Schema(room=room_field(), text=text_field(settings.max_message_length),
                  echo=Field(bool, required=False, default=False),
                  client_id=Field(str, required=False, pattern=CLIENT_ID_PATTERN))


def recent_history(services, room: str, since: str | None) -> dict:
    """What a `join` ack (and a REST read) carries of the room's history."""
    history, limit = services.history, services.settings.history_on_join
    if not history.enabled or not limit:
        return {}
    if since is None:
        return {"history": history.recent(room, limit)}
    messages, complete = history.after(room, since, limit + 1)
    return {"history": messages[:limit], "complete": complete, "more": len(messages) > limit}


class ChatNamespace(BaseNamespace):
    path = CHAT_NAMESPACE

    def __init__(self, services) -> None:
        super().__init__(services)
        # sid -> chat rooms joined (python-socketio can only list them by scanning every
        # room, and has forgotten them by disconnect time): for MAX_ROOMS_PER_SOCKET and
        # presence
        self.joined: dict[str, set[str]] = {}

    @on_event("join", schema=JOIN_SCHEMA)
    def join(self, ctx: EventContext, payload: dict) -> dict:
        room = payload["room"]
        rooms = self.joined.setdefault(ctx.sid, set())
        if room not in rooms:
            if len(rooms) >= self.settings.max_rooms_per_socket:
                raise AppError(f"a socket may be in {len(rooms)} rooms at most: leave one "
                               "first", code="too_many_rooms", status=429)
            self.enter_room(ctx.sid, room_key(room))
            rooms.add(room)
            if self.services.presence.add(room, ctx.user.id, ctx.user.name):
                # (not to the joiner: its ack lists who is there)
                self._announce(room, ctx.user.id, ctx.user.name, "join", skip_sid=ctx.sid)
        # read after entering: a message sent meanwhile may come twice (same id), never
        # not at all
        return {"room": room, **recent_history(self.services, room, payload["since"]),
                "presence": self.services.presence.members(room)}

    @on_event("leave", schema=ROOM_SCHEMA)
    def leave(self, ctx: EventContext, payload: dict) -> dict:
        self._require_member(ctx.sid, payload["room"])
        self.leave_room(ctx.sid, room_key(payload["room"]))
        self._left(ctx.sid, payload["room"], ctx.user.id, ctx.user.name)
        return {"room": payload["room"]}

    def on_disconnected(self, sid, identity, reason) -> None:
        for room in list(self.joined.get(sid, ())):
            self._left(sid, room, identity.id, identity.name)
        self.joined.pop(sid, None)

    def _left(self, sid: str, room: str, user_id: str, name: str) -> None:
        self.joined.get(sid, set()).discard(room)
        if self.services.presence.remove(room, user_id):
            self._announce(room, user_id, name, "leave")

    def _announce(self, room: str, user_id: str, name: str, action: str,
                  skip_sid: str | None = None) -> None:
        self.emit(PRESENCE_EVENT, presence_event(room, user_id, name, action),
                  room=room_key(room), skip_sid=skip_sid)

    @on_event("message", schema=message_schema)
    def message(self, ctx: EventContext, payload: dict) -> dict:
        room = payload["room"]
        self._require_member(ctx.sid, room)
        # The sender gets the message in its ack; `echo` also delivers the event to
        # it like to any member (skip_sid=None), e.g. for a client that renders only events.
        message = self.services.post_message(room, payload["text"], ctx.user.public(),
                                             skip_sid=None if payload["echo"] else ctx.sid,
                                             client_id=payload["client_id"])
        return {"message": message}

    def _require_member(self, sid: str, room: str) -> None:
        if not self.is_member(sid, room_key(room)):
            raise AppError(f"join room {room!r} first", code="not_in_room", status=403)
