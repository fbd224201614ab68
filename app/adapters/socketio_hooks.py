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
