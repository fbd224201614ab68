"""python-socketio internals the template builds on (tested: `versions.TESTED`).

`ServerHooks` is `socketio.Server` with the steps of its packet handling the template
extends (app/sockets/server.py) under public names; `RedisManagerHooks` the same for
the Redis client manager (app/core/queue). Override the public name and call `super()`
for the library's behaviour (app/adapters/hooks.py).
"""

from __future__ import annotations

import socketio

from app.adapters.hooks import Hooked


class ServerHooks(Hooked, socketio.Server):
    HOOKS = {
        "_engineio_server_class": "engineio_server_class",  # () -> the Engine.IO server class
        # (eio_sid, environ) -> None, or a refusal dict (Engine.IO answers 401 with it)
        "_handle_eio_connect": "on_eio_connect",
        "_handle_eio_message": "on_eio_message",  # (eio_sid, data): one message, dispatched
        "_handle_eio_disconnect": "on_eio_disconnect",  # (eio_sid, reason)
        # (eio_sid, namespace, data): a CONNECT packet, which runs the connect handler
        "_handle_connect": "on_connect_packet",
        # (eio_sid, namespace, reason=None): the client left a namespace
        "_handle_disconnect": "on_disconnect_packet",
        # (eio_sid, namespace, id, data): an EVENT packet, before its handler is found
        "_handle_event": "on_event_packet",
        # (server, sid, eio_sid, data, namespace, id): runs the handler, sends the ack
        "_handle_event_internal": "run_event_handler",
        "_send_packet": "send_socketio_packet",  # (eio_sid, pkt): any packet to a client
        # (eio_sid, eio_pkt): an emit's encoded packet to one of its recipients
        "_send_eio_packet": "send_engineio_packet",
    }
    # (event, namespace, *args) -> the handler's result, or `not_handled`
    trigger_handler = socketio.Server._trigger_event

    def forget_partial_packet(self, eio_sid: str) -> None:
        """Drop a binary packet still waiting for its attachments (a client cut for a
        malformed packet)."""
        self._binary_packet.pop(eio_sid, None)


class RedisManagerHooks(Hooked, socketio.RedisManager):
    HOOKS = {
        # () -> None: (re)connect, by the listener before every (re)subscribe
        "_redis_connect": "connect_redis",
        # (data): one message to every worker (emit, close_room, disconnect, ...)
        "_publish": "publish_message",
        "_handle_emit": "on_emit_message",  # (message): an emit from the channel
        # () -> iterator of raw pub/sub messages, resubscribing after an error
        "_redis_listen_with_retries": "listen_with_retries",
        "_listen": "received_messages",  # () -> iterator of this channel's payloads
    }


class _SidSet(dict):
    """The library's list of sids (`append`, `remove`, `in`, `len`), in O(1) each;
    a sid appended twice is in it once."""

    __slots__ = ()

    def append(self, sid) -> None:
        self[sid] = None

    def remove(self, sid) -> None:
        del self[sid]


class _PendingSids(dict):
    """namespace -> `_SidSet`: the library stores a new list, this keeps a set."""

    __slots__ = ()

    def __setitem__(self, namespace, sids) -> None:
        super().__setitem__(namespace, _SidSet.fromkeys(sids))

    def setdefault(self, namespace, sids=()):  # (dict's own would store the list)
        if namespace not in self:
            self[namespace] = sids
        return self[namespace]


class RoomIndex:
    """Each socket's rooms, kept beside python-socketio's `rooms` (a mixin for its
    managers, before the library's class).

    The library finds a socket's rooms by walking every room of the namespace:
    `basic_disconnect` copies them all and tests each, `get_rooms` the same. Every
    socket has a room of its own, so with N sockets connected a disconnect cost O(N)
    (a connect storm's disconnects: quadratic, 21% of a worker's time at 6,000
    sockets). Here a disconnect leaves the socket's own rooms and then does the rest
    of the library's `basic_disconnect` (its callbacks and pending lists), which the
    contract test compares with the library's, operation by operation.

    The library's lists of sockets connecting and disconnecting are sets here: each
    connect and each incoming event looks a socket up in them, and a storm of
    connects waiting on Redis (or of disconnects) makes them thousands long.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # (namespace, sid) -> its rooms (None: the namespace itself), in entry order
        self.rooms_of: dict[tuple[str, str], dict] = {}
        self.pending_connect = _PendingSids()
        self.pending_disconnect = _PendingSids()

    def basic_enter_room(self, sid, namespace, room, eio_sid=None):
        result = super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self.rooms_of.setdefault((namespace, sid), {})[room] = None
        return result

    def basic_leave_room(self, sid, namespace, room):
        result = super().basic_leave_room(sid, namespace, room)
        rooms = self.rooms_of.get((namespace, sid))
        if rooms is not None and rooms.pop(room, False) is None and not rooms:
            del self.rooms_of[(namespace, sid)]
        return result

    def basic_disconnect(self, sid, namespace, **kwargs):
        if namespace not in self.rooms:
            return
        for room in list(self.rooms_of.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids is not None and sids.pop(sid, False) is None and not sids:
                del pending[namespace]

    def get_rooms(self, sid, namespace):
        return [room for room in self.rooms_of.get((namespace, sid), ()) if room is not None]
