"""What each worker answers about its own clients, for the control bus.

python-socketio's rooms and participants are per worker: /admin asks every worker
(app/core/control.py) and merges the answers with the functions below.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import socketio

from app.core.chat import (
    CHAT_NAMESPACE,
    PRESENCE_EVENT,
    presence_event,
    room_from_key,
    room_key,
    user_room,
)
from app.services import Services
from app.sockets.admin_ui import local_disconnect, local_snapshot
from app.sockets.base import KICKED_EVENT


def local_rooms(sio: socketio.Server) -> dict[str, int]:
    rooms = sio.manager.rooms.get(CHAT_NAMESPACE, {})
    return {name: len(members) for key, members in rooms.items()
            if (name := room_from_key(key)) is not None and members}


def local_stats(sio: socketio.Server) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host_id": getattr(sio.manager, "host_id", "local"),
        # Counted from the template's own per-sid identities: it proves disconnect cleanup.
        "connections": {ns: len(getattr(handler, "identities", ()))
                        for ns, handler in sio.namespace_handlers.items()},
        "rooms": local_rooms(sio),
    }


def local_kick(sio: socketio.Server, user_id: str, notice: dict) -> int:
    """Tell (`kicked` with `notice`) and disconnect every local socket of `user_id`, in
    every namespace."""
    kicked = 0
    for namespace in list(sio.manager.rooms):
        for sid, _eio_sid in list(sio.manager.get_participants(namespace, user_room(user_id))):
            sio.emit(KICKED_EVENT, notice, to=sid, namespace=namespace, ignore_queue=True)
            sio.disconnect(sid, namespace=namespace, ignore_queue=True)
            kicked += 1
    return kicked


def local_revoke(sio: socketio.Server, jti: str | None = None, family: str | None = None) -> int:
    """Disconnect every local socket authenticated with token `jti`, or with a token of
    `family`."""
    revoked = 0
    for handler in sio.namespace_handlers.values():
        for sid, identity in list(getattr(handler, "identities", {}).items()):
            if (jti and identity.jti == jti) or (family and identity.family == family):
                handler.end_socket(sid, "token_revoked", "this token was revoked: sign in again")
                revoked += 1
    return revoked


def local_member(sio: socketio.Server, user_id: str, room: str) -> bool:
    """Is one of `user_id`'s sockets on this worker a member of chat room `room`?"""
    members = sio.manager.rooms.get(CHAT_NAMESPACE, {}).get(room_key(room), {})
    return any(sid in members
               for sid, _ in sio.manager.get_participants(CHAT_NAMESPACE, user_room(user_id)))


def register_worker_ops(sio: socketio.Server, services: Services) -> None:
    bus = sio.manager.control
    revocations = services.revocations

    def kick(payload: dict) -> dict:  # {user_id, reason, until?}
        user_id = str(payload["user_id"])
        if payload.get("until") is not None:
            # a ban: refused on this worker's live sockets at once, with its reason
            # (their token looks may find it before the kick reaches them), and told
            # the notice those looks tell
            revocations.remember(payload)
            notice = revocations.kick_notice(user_id)
        else:
            notice = {"reason": str(payload.get("reason", ""))}
        return {"sockets": local_kick(sio, user_id, notice)}

    def revoke(payload: dict) -> dict:  # {jti | family, until}
        revocations.remember(payload)
        return {"sockets": local_revoke(sio, payload.get("jti"), payload.get("family"))}

    manager = sio.manager
    if hasattr(manager, "heartbeat_hooks"):  # the Redis queue: presence across workers
        presence = services.presence

        def heartbeat(alive: set[str]) -> None:
            for room, user_id, name in presence.heartbeat(alive):
                sio.emit(PRESENCE_EVENT, presence_event(room, user_id, name, "leave"),
                         to=room_key(room), namespace=CHAT_NAMESPACE)

        manager.heartbeat_hooks.append(heartbeat)
        # bans and revocations mirrored (connects check memory: app/core/revocation.py)
        revocations.spawn = sio.start_background_task
        manager.heartbeat_hooks.append(lambda alive: revocations.sync())

    feed = sio.admin_feed

    def admin_ui(payload: dict) -> dict:
        feed.asked()  # someone watches: live events too, for a while
        return local_snapshot(sio)

    bus.register("admin_ui", admin_ui)
    bus.register("admin_ui_disconnect", lambda payload: {"sockets": local_disconnect(sio, payload)})
    bus.register("rooms", lambda payload: local_rooms(sio))
    bus.register("stats", lambda payload: local_stats(sio))
    bus.register("kick", kick)
    bus.register("revoke", revoke)
    bus.register("member", lambda payload: {
        "member": local_member(sio, str(payload["user_id"]), str(payload["room"]))})


def merge_rooms(answers: list[Any]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for answer in answers:
        if isinstance(answer, dict) and "error" not in answer:
            total.update(answer)
    return dict(total)


def answer_errors(answers: list[Any]) -> list[str]:
    return [a["error"] for a in answers if isinstance(a, dict) and "error" in a]
