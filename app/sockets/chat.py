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
    ANNOUNCEMENT_EVENT,
    CHAT_NAMESPACE,
    MESSAGE_EVENT,
    PRESENCE_EVENT,
    ROOM_PREFIX,
    ClientId,
    Room,
    RoomPayload,
    StreamId,
    Text,
    presence_event,
    room_from_key,
    room_key,
)
from app.core.errors import AppError, QueueUnavailable
from app.core.queue import publish_now
from app.core.schema import Payload
from app.sockets.base import BaseNamespace, EventContext, log, on_event
from app.sockets.events import ChatMessage, PresenceChange

ROOM_SCHEMA = RoomPayload


class Join(Payload):
    room: Room
    since: StreamId | None = None  # a message's stream_id: what followed it comes back


def message_schema(settings):
    class Message(Payload):
        room: Room
        text: Text(settings.max_message_length)
        echo: bool = False
        client_id: ClientId | None = None  # a retry with the same id is delivered once

    return Message


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
    logged_rooms = ROOM_PREFIX  # room messages, presence and announcements
    server_events = {MESSAGE_EVENT: ChatMessage, ANNOUNCEMENT_EVENT: ChatMessage,
                     PRESENCE_EVENT: PresenceChange}
    error_codes = {"not_in_room": "join the room first (leave, message)",
                   "too_many_rooms": "join: the socket is in MAX_ROOMS_PER_SOCKET rooms"}

    def __init__(self, services) -> None:
        super().__init__(services)
        # sid -> chat rooms joined (python-socketio can only list them by scanning every
        # room, and has forgotten them by disconnect time): for MAX_ROOMS_PER_SOCKET and
        # presence
        self.joined: dict[str, set[str]] = {}

    @on_event("join", schema=Join)
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

    def on_recovered(self, sid, identity, rooms) -> None:
        for key in rooms:
            room = room_from_key(key)
            if room is not None:
                self.joined.setdefault(sid, set()).add(room)
                if self.services.presence.add(room, identity.id, identity.name):
                    self._announce(room, identity.id, identity.name, "join", skip_sid=sid)

    def on_disconnected(self, sid, identity, reason) -> None:
        for room in list(self.joined.get(sid, ())):
            self._left(sid, room, identity.id, identity.name)
        self.joined.pop(sid, None)

    def _left(self, sid: str, room: str, user_id: str, name: str) -> None:
        self.joined.get(sid, set()).discard(room)
        try:
            last = self.services.presence.remove(room, user_id)
        except QueueUnavailable as exc:  # Redis down: this worker's share expires with it
            log.info("presence: leave of %s in %s not recorded: %s", user_id, room, exc.message)
            return
        if last:
            self._announce(room, user_id, name, "leave")

    def _announce(self, room: str, user_id: str, name: str, action: str,
                  skip_sid: str | None = None) -> None:
        # A notice to the others: if the queue refuses it (just after a worker died, in
        # an outage), the join or leave itself still stands, and the member list
        # (join ack, REST) is right.
        try:
            with publish_now():
                self.emit(PRESENCE_EVENT, presence_event(room, user_id, name, action),
                          room=room_key(room), skip_sid=skip_sid)
        except QueueUnavailable as exc:
            log.info("presence %s of %s in %s not sent to every worker: %s", action, user_id,
                     room, exc.message)

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
