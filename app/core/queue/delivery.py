"""Delivery of logged events to this worker's sockets, and the per-handler publish modes."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from engineio import packet as eio_packet
from socketio import packet as sio_packet

from app.core.history import EventLog, format_id, parse_id
from app.core.idempotency import SeenMessages
from app.core.queue.partitions import NONE, encode_offset


class LogWrite:
    """What a logged emit adds to its publish."""

    __slots__ = ("entry", "key", "on_id", "once")

    def __init__(self, key: str, entry: str, on_id, once: str | None) -> None:
        self.key = key
        self.entry = entry
        self.on_id = on_id
        self.once = once


_once = threading.local()


@contextlib.contextmanager
def logged_once(key: str | None):
    """The logged emit made inside is logged once per `key` (within the idempotency
    window), however often it is retried: a client_id's retry (app/core/chat.py)."""
    _once.key = key
    try:
        yield
    finally:
        _once.key = None


def once_key() -> str | None:
    """The key of the `logged_once` block the caller is in, if any."""
    return getattr(_once, "key", None)


def message_with_id(args: list):
    """The sender's copy of a payload that asks for its log id (`stream_id: None`)."""
    first = args[0] if args else None
    if isinstance(first, dict) and "stream_id" in first and first["stream_id"] is None:
        return first
    return None


class LoggedDelivery:
    """Delivery of logged events to this worker's sockets (both managers).

    A socket with recovery (`offset_sids`) gets each logged event with its offset as
    the last argument; one being restored (`replaying`) has them held until its
    replay is sent (app/core/recovery.py). The packets are encoded once per emit,
    each variant shared by its recipients.
    """

    log: EventLog | None = None
    recovery = None  # app.core.recovery.Recovery, set by the server
    admin_feed = None  # app.sockets.admin_ui.AdminFeed, set with the namespaces
    repeats = False  # can a logged event come again (a retry through Redis)?

    partition = 0  # this queue's partition (app/core/queue/partitions.py)

    def _init_delivery(self) -> None:
        # every partition's queue, this one's at its index (the first shares its state)
        self.partitions: list = [self]
        self.offset_sids: set[str] = set()
        # sid -> events held while its replay is read (a list of (partition, id, event,
        # data, offset)), then the id its replay went up to in each partition (floors:
        # a later delivery of those is a repeat)
        self.replaying: dict[str, list | dict[int, tuple[int, int]]] = {}
        self.preset_sid: str | None = None
        # The highest log id delivered here (or the log's top at the first subscribe):
        # the subscription carries new ids in increasing order.
        self.position: tuple[int, int] | None = None
        # The same once every socket has had it (`position` moves first, a catch-up's
        # to its end): a socket's offset lists it for each partition.
        self.delivered: tuple[int, int] | None = None
        # Held while an event is delivered, by every partition of the worker: another
        # partition's offsets read this one's `delivered` (None: one partition).
        self.delivering = None
        # (namespace, room) -> sid -> the position when the socket entered the room, or
        # the id its recovery replay went up to: a repeat of an id not above it is not
        # owed to it (it had the message, from this worker, its history or its replay)
        self.entered: dict[tuple[str, Any], dict[str, tuple[int, int]]] = {}
        # After a catch-up from the log (Receiver._catch_up): the id it read up to, and
        # the rooms it read; until the subscription passes that id
        self.covered: tuple[tuple[int, int], set] | None = None

    def logged_key(self, namespace: str, room, callback, kwargs) -> str | None:
        if self.log is None or callback is not None or kwargs.get("ignore_queue"):
            return None
        return self.log.key_for(namespace, room)

    def deliver_logged(self, event: str, data: list, namespace: str, room, skip_sid,
                       offset: str | None, repeat: bool = False, caught_up: bool = False) -> None:
        """`repeat`: a retry of an event delivered before, to the sockets it missed;
        `caught_up`: read from the log at a resubscribe (Receiver._catch_up)."""
        if self.delivering is None:
            return self._deliver_logged(event, data, namespace, room, skip_sid, offset, repeat,
                                        caught_up)
        with self.delivering:
            return self._deliver_logged(event, data, namespace, room, skip_sid, offset, repeat,
                                        caught_up)

    def _deliver_logged(self, event, data, namespace, room, skip_sid, offset, repeat, caught_up):
        if getattr(self, "_leaving", None) is not None:
            # Left the queue (a drain): its rooms' channels are unsubscribed, so an offset
            # sent now could pass their events; its sockets, about to be closed, get
            # this and what they miss from their recovery, or their `since`.
            return
        key = parse_id(offset) if offset else None
        repeat = repeat and key is not None
        if self.covered is not None and key is not None and not caught_up:
            top, rooms = self.covered
            if key > top:
                self.covered = None
            elif not repeat and (namespace, room) in rooms:
                return  # the catch-up read it from the log
        message = message_with_id(data)
        if message is not None and offset:
            message["stream_id"] = offset
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        packets: dict[str | None, list] = {}
        new = key is not None and not repeat
        if new and (self.position is None or key > self.position):
            self.position = key
        # (a socket that entered the room, or was replayed, at or past this id had it)
        entered = self.entered.get((namespace, room), {}) if repeat or caught_up else None
        here, shared = self.partition, None  # (the offset of sockets without floors)
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            if entered and (since := entered.get(sid)) is not None and since >= key:
                continue
            held = self.replaying.get(sid)
            floors = None
            if held is not None and key is not None:
                if isinstance(held, list):  # its replay is being read: after it
                    held.append((here, key, event, data, offset))
                    continue
                floor = held.get(here)
                if floor is not None:
                    if key <= floor:  # replayed already (the floor of its snapshot)
                        continue
                    del held[here]  # in id order from here on
                if held:
                    self._pass_floors(held)
                if not held:
                    del self.replaying[sid]
                floors = held
            # a repeat goes without its offset: the socket may have later ones already
            if not new or sid not in self.offset_sids:
                mark = None
            elif floors:
                mark = self.offset_at(key, floors)
            else:
                mark = shared = shared or self.offset_at(key)
            if mark not in packets:
                packets[mark] = self._eio_packets(
                    namespace, [event, *data] + ([] if mark is None else [mark]))
            for pkt in packets[mark]:
                self.server.send_engineio_packet(eio_sid, pkt)
        if new and (self.delivered is None or key > self.delivered):
            self.delivered = key

    def offset_at(self, key: tuple[int, int], floors: dict | None = None) -> str:
        """The offset of a socket getting this partition's event `key`: its position in
        every partition (raised to the floors of its replay)."""
        if len(self.partitions) == 1:
            return format_id(key)
        # (an event below this partition's position: one of a room its catch-up did not
        # cover; the offset never goes back, or a replay would repeat what it had)
        positions = [max(key, self.delivered or key) if queue is self
                     else queue.delivered or NONE for queue in self.partitions]
        if floors:
            positions = [max(position, floors.get(index, position))
                         for index, position in enumerate(positions)]
        return encode_offset(positions)

    def _pass_floors(self, floors: dict) -> None:
        """A recovered socket's floors that its partitions' positions have passed: no
        longer needed (later ids are above them; its offset is the position's)."""
        for index in [index for index, floor in floors.items()
                      if (done := self.partitions[index].delivered) is not None and floor <= done]:
            del floors[index]

    def raise_position(self, key: tuple[int, int]) -> None:
        """Nothing of this partition below `key` is still to come (a tick: queue/ticks)."""
        if getattr(self, "_leaving", None) is not None:
            return  # (no longer subscribed to its rooms: nothing moves)
        if self.position is None or key > self.position:
            self.position = key
        if self.delivered is None or key > self.delivered:
            self.delivered = key

    def send_logged(self, eio_sid: str, namespace: str, event: str, data: list, stream_id: str,
                    offset: str) -> None:
        """One logged event (its id in its room's stream) to one socket, with its
        offset (a replay)."""
        message = message_with_id(data)
        if message is not None:
            data = [{**message, "stream_id": stream_id}, *data[1:]]
        for pkt in self._eio_packets(namespace, [event, *data, offset]):
            self.server.send_engineio_packet(eio_sid, pkt)

    def _eio_packets(self, namespace: str, data: list) -> list:
        encoded = self.server.packet_class(sio_packet.EVENT, namespace=namespace,
                                           data=data).encode()
        encoded = encoded if isinstance(encoded, list) else [encoded]
        return [eio_packet.Packet(eio_packet.MESSAGE, p) for p in encoded]

    # A restored socket gets its old sid back (python-socketio's pre_connect, with
    # the sid chosen by app/core/recovery.py when there is one).
    def pre_connect(self, eio_sid, namespace):
        sid, self.preset_sid = self.preset_sid, None
        if sid is None:
            return super().pre_connect(eio_sid, namespace)
        try:
            self.basic_enter_room(sid, namespace, None, eio_sid=eio_sid)
        except Exception:  # that sid is taken here: a new one
            return super().pre_connect(eio_sid, namespace)
        self.basic_enter_room(sid, namespace, sid, eio_sid=eio_sid)
        self.pending_connect.setdefault(namespace, []).append(sid)
        return sid

    def basic_enter_room(self, sid, namespace, room, eio_sid=None):
        result = super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if self.repeats and self._logged_room(sid, namespace, room):
            floor = self.entered_floor(namespace, room)
            if floor is not None:
                self.entered.setdefault((namespace, room), {})[sid] = floor
        return result

    def entered_floor(self, namespace: str, room) -> tuple[int, int] | None:
        """What a socket entering `room` now has had: up to this id (`entered`)."""
        return self.position

    def _logged_room(self, sid: str, namespace: str, room) -> bool:
        log = self.partition_for(namespace, room).log
        return room != sid and log is not None and log.key_for(namespace, room) is not None

    def basic_leave_room(self, sid, namespace, room):
        entered = self.entered.get((namespace, room))
        if entered is not None and entered.pop(sid, None) is not None and not entered:
            del self.entered[(namespace, room)]
        return super().basic_leave_room(sid, namespace, room)

    def replayed_up_to(self, sid: str, namespace: str, rooms,
                       floors: dict[int, tuple[int, int]]) -> None:
        """A recovered socket's replay went up to `floors` (per partition) in `rooms`."""
        if not self.repeats:
            return
        for room in rooms:
            key = floors.get(self.partition_for(namespace, room).partition)
            if (key is not None and self._logged_room(sid, namespace, room)
                    and sid in self.rooms.get(namespace, {}).get(room, {})):  # still in it
                entered = self.entered.setdefault((namespace, room), {})
                entered[sid] = max(entered.get(sid, key), key)

    def partition_for(self, namespace: str, room):
        """The queue of a room's partition (app/core/queue/partitions.py)."""
        return self

    # A recovering socket's record follows its rooms; a watching Admin UI is told.
    def enter_room(self, sid, namespace, room, eio_sid=None):
        result = super().enter_room(sid, namespace, room, eio_sid=eio_sid)
        if self.recovery is not None:
            self.recovery.room_changed(sid, room, entered=True)
        if self.admin_feed is not None and self.admin_feed.watched():
            self.admin_feed.room_changed(namespace, room, sid, entered=True)
        return result

    def leave_room(self, sid, namespace, room):
        result = super().leave_room(sid, namespace, room)
        if self.recovery is not None:
            self.recovery.room_changed(sid, room, entered=False)
        if self.admin_feed is not None and self.admin_feed.watched():
            self.admin_feed.room_changed(namespace, room, sid, entered=False)
        return result


def first_delivery(seen: SeenMessages | None, data) -> bool:
    """False for a payload with a `client_id` whose id this worker delivered already
    (a retried send, app/core/idempotency.py)."""
    if seen is None or not isinstance(data, dict) or "client_id" not in data:
        return True
    return seen.first_time(str(data.get("id")))


# Within an event handler (app/sockets/server.py, `deferred_acks`): publishes are
# queued in order and the handler goes on; the event's ack is sent once they are done
# (or carries their error). A client's next event is then handled while this one's
# publish is on its way, instead of after a round trip to Redis.
_acks = threading.local()  # green-thread local under eventlet and gevent


@contextlib.contextmanager
def deferred_acks():
    """Collect the publishes made inside; yields their list (each has .event, .error)."""
    _acks.pending = pending = []
    try:
        yield pending
    finally:
        _acks.pending = None


@contextlib.contextmanager
def publish_now():
    """Inside, publishes wait for their result again (a caller that must know it at
    once: a claim marked sent, a best-effort notice whose failure is its own)."""
    saved, _acks.pending = getattr(_acks, "pending", None), None
    try:
        yield
    finally:
        _acks.pending = saved


def deferred() -> list | None:
    """The publishes of the `deferred_acks` block the caller is in, or None."""
    return getattr(_acks, "pending", None)
