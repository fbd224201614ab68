"""/admin: operations on every worker, for tokens with role "admin" only.

Events (each acks {"ok": true, ...} or {"ok": false, "error": ...}):
  broadcast {text}              -> {announcement}   "announcement" to every /chat client
  rooms     {}                  -> {rooms: [{room, members}], workers, errors}
  kick      {user_id, reason?, ban_seconds?}
                                -> {user_id, sockets, workers, errors, banned_until?}
                                   with ban_seconds, the user's tokens are refused at
                                   connect, on REST and on live sockets until then
  stats     {}                  -> {connections: {ns: n}, rooms, workers: [...], errors}
`errors` lists workers that failed or did not answer in GATHER_TIMEOUT: the
result is then partial, and says so.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from app.core.chat import ANNOUNCEMENT_EVENT, CHAT_NAMESPACE, new_message, text_model
from app.core.schema import Payload
from app.sockets.base import BaseNamespace, EventContext, on_event
from app.sockets.worker_ops import answer_errors, merge_rooms


class Empty(Payload):
    """No fields: `{}`, or no payload at all."""


def broadcast_schema(settings):
    return text_model(settings.max_message_length)


class Kick(Payload):
    user_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    reason: Annotated[str, StringConstraints(max_length=200)] = "kicked by an administrator"
    ban_seconds: Annotated[int, Field(ge=0, le=365 * 24 * 3600)] = 0


class AdminNamespace(BaseNamespace):
    path = "/admin"
    required_role = "admin"

    @on_event("broadcast", schema=broadcast_schema)
    def broadcast(self, ctx: EventContext, payload: dict) -> dict:
        announcement = new_message(None, payload["text"], ctx.user.public())
        self.emit(ANNOUNCEMENT_EVENT, announcement, namespace=CHAT_NAMESPACE)
        return {"announcement": announcement}

    @on_event("rooms", schema=Empty)
    def rooms_(self, ctx: EventContext, payload: dict) -> dict:
        answers = self.server.manager.control.run("rooms")
        rooms = merge_rooms(answers)
        return {"rooms": [{"room": name, "members": count} for name, count in sorted(rooms.items())],
                "workers": len(answers), "errors": answer_errors(answers)}

    @on_event("kick", schema=Kick)
    def kick(self, ctx: EventContext, payload: dict) -> dict:
        command = {"user_id": payload["user_id"], "reason": payload["reason"]}
        if payload["ban_seconds"]:
            # stored first (connects and REST everywhere), then every worker ends and
            # refuses the user's live sockets
            command["until"] = self.services.revocations.ban(
                payload["user_id"], payload["ban_seconds"], payload["reason"])
        answers = self.server.manager.control.run("kick", command)
        sockets = sum(a.get("sockets", 0) for a in answers if isinstance(a, dict))
        result = {"user_id": payload["user_id"], "sockets": sockets, "workers": len(answers),
                  "errors": answer_errors(answers)}
        if "until" in command:
            result["banned_until"] = int(command["until"])
        return result

    @on_event("stats", schema=Empty)
    def stats(self, ctx: EventContext, payload: dict) -> dict:
        answers = self.server.manager.control.run("stats")
        workers = [a for a in answers if isinstance(a, dict) and "error" not in a]
        connections: dict[str, int] = {}
        for worker in workers:
            for namespace, count in worker["connections"].items():
                connections[namespace] = connections.get(namespace, 0) + count
        rooms = merge_rooms([worker["rooms"] for worker in workers])
        return {"connections": connections, "rooms": len(rooms),
                "workers": [{**worker, "rooms": len(worker["rooms"])} for worker in workers],
                "errors": answer_errors(answers)}
