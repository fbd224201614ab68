"""Chat rooms and messages: naming rules and the message every sender builds.

Client-chosen room names are stored under the `room:` prefix so they can never
collide with the rooms python-socketio and this template use internally (each
socket's own sid room, and `user:<id>` rooms used to reach all of a user's sockets).
"""

from __future__ import annotations

import logging
import time
import uuid
from functools import cache
from typing import Annotated, Any, Protocol

from pydantic import StringConstraints

from app.core.errors import QueueUnavailable
from app.core.history import History
from app.core.idempotency import SENT, Claims
from app.core.queue import logged_once, publish_now
from app.core.schema import Payload

log = logging.getLogger(__name__)

CHAT_NAMESPACE = "/chat"
MESSAGE_EVENT = "message"
PRESENCE_EVENT = "presence"
ANNOUNCEMENT_EVENT = "announcement"

ROOM_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
ROOM_PREFIX = "room:"
USER_PREFIX = "user:"
SYSTEM_SENDER = {"id": "system", "name": "system"}


# Field types of payload models (app.core.schema.Payload).
Room = Annotated[str, StringConstraints(max_length=64, pattern=ROOM_PATTERN)]


# A history id ("<ms>-<n>") and a client's own message id.
StreamId = Annotated[str, StringConstraints(max_length=41, pattern=r"^[0-9]{1,20}-[0-9]{1,20}$")]
ClientId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


def Text(max_length: int):
    """Message text: stripped, then 1..max_length characters."""
    return Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                            max_length=max_length)]


class RoomPayload(Payload):
    room: Room


@cache
def text_model(max_length: int) -> type[Payload]:
    class TextPayload(Payload):
        text: Text(max_length)

    return TextPayload


@cache
def post_model(max_length: int) -> type[Payload]:
    """{room, text}: a message posted from the CLI (no socket, so no echo)."""

    class Post(RoomPayload, text_model(max_length)):
        pass

    return Post


def room_key(room: str) -> str:
    return ROOM_PREFIX + room


def room_from_key(key: Any) -> str | None:
    """The public name of an internal room key, or None for internal rooms."""
    if isinstance(key, str) and key.startswith(ROOM_PREFIX):
        return key[len(ROOM_PREFIX):]
    return None


def user_room(user_id: str) -> str:
    return USER_PREFIX + user_id


class Emitter(Protocol):
    """A socketio.Server or a write-only client manager: both emit through the queue."""

    def emit(self, event: str, data: Any = None, **kwargs: Any) -> Any: ...


def new_message(room: str | None, text: str, sender: dict[str, str]) -> dict[str, Any]:
    """A message or (room None) an announcement, with a server-assigned id and time (ms)."""
    return {"id": uuid.uuid4().hex, "room": room, "text": text, "sender": sender,
            "ts": int(time.time() * 1000)}


def presence_event(room: str, user_id: str, name: str, action: str) -> dict[str, Any]:
    """`presence` to a room: a user's first socket came in ("join") or last went ("leave")."""
    return {"room": room, "user": {"id": user_id, "name": name}, "action": action}


def post_message(emitter: Emitter, room: str, text: str, sender: dict[str, str], *,
                 skip_sid: str | None = None, history: History | None = None,
                 claims: Claims | None = None, client_id: str | None = None) -> dict[str, Any]:
    """Send a chat message to every member of `room`, on every worker; with history
    on, it is logged as it is published and gets its `stream_id` then
    (app/core/history.py).

    `skip_sid` leaves out one socket (usually the sender, who has the message in
    its ack); without it the sender receives its own message too, if it is a member.
    With `client_id` (and `claims`) a retry is answered with the first attempt's
    message and never delivered (nor logged) twice (app/core/idempotency.py).
    """
    message = new_message(room, text, sender)
    if history is not None and history.enabled:
        message["stream_id"] = None  # the log's id, set when it is published
    claim = None
    if client_id is not None and claims is not None:
        message["client_id"] = client_id
        claim = f"{sender['id']}:{client_id}"
        first = claims.claim(claim, message)
        if first is not None:
            if first["state"] == SENT:
                return first["message"]
            message = first["message"]  # unfinished: the same message, sent again
    if claim is None:
        emitter.emit(MESSAGE_EVENT, message, to=room_key(room), skip_sid=skip_sid,
                     namespace=CHAT_NAMESPACE)
        return message
    # the claim says "sent" only once it is; the log keeps one entry however retried
    with publish_now(), logged_once(claims.key(claim) + ":logged"):
        emitter.emit(MESSAGE_EVENT, message, to=room_key(room), skip_sid=skip_sid,
                     namespace=CHAT_NAMESPACE)
    try:
        claims.record(claim, SENT, message)
    except QueueUnavailable as exc:  # sent all the same: never answered "not sent"
        # (still pending: a retry publishes it again, and members that have it drop it)
        log.info("message %s sent, its claim not marked: %s", message["id"], exc.message)
    return message
