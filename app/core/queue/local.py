"""The in-memory manager (MESSAGE_QUEUE_URL empty)."""

from __future__ import annotations

import socketio

from app.adapters.socketio_hooks import RoomIndex
from app.core.control import LocalControlBus
from app.core.idempotency import SeenMessages
from app.core.queue.delivery import LoggedDelivery, first_delivery


class LocalManager(LoggedDelivery, RoomIndex, socketio.Manager):
    """In-memory manager: every client is in this process."""

    def __init__(self, seen: SeenMessages | None = None) -> None:
        super().__init__()
        self.control = LocalControlBus()
        self.seen = seen
        self._init_delivery()

    def emit(self, event, data, namespace=None, room=None, skip_sid=None, callback=None,
             to=None, **kwargs):
        if not first_delivery(self.seen, data):
            return None
        room = to or room
        key = self.logged_key(namespace, room, callback, kwargs)
        if key is None:
            return super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                                callback=callback, **kwargs)
        args = list(data) if isinstance(data, tuple) else [data]
        offset = self.log.append_memory(key, event, args, skip_sid)
        self.deliver_logged(event, args, namespace, room, skip_sid, offset)
        return None

    def check(self) -> str | None:
        """None when the queue is usable, else the reason (always usable here)."""
        return None

    def leave(self) -> None:
        """Nothing to tell: no other worker shares this manager."""

    def wait_announced(self, timeout: float = 0) -> bool:
        """Nobody else to know this worker."""
        return True
