"""Redis Cluster through plain connections to the master of one hash slot.

Every key and channel of a deployment starts with MESSAGE_QUEUE_CHANNEL, which on a
cluster carries a hash tag (`{realtime}`): they all live in one slot, and a plain
redis-py client connected to that slot's master serves the whole queue unchanged:
its scripts, pipelines, transactions and pub/sub (whose PUBLISH counts are then
counted where every worker subscribes). redis-py's RedisCluster routes command by
command instead, and its pipelines, scripts and pub/sub differ from the plain
client's in ways the queue's guarantee depends on.

What this module reads from redis-py beyond its documented API: a connection class
may choose its address when it connects (as redis-py's own Sentinel connections do),
see every reply first (`read_response`), and tell it is open by its `_sock`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import weakref
from urllib.parse import unquote, urlsplit

import redis
from redis.connection import Connection, SSLConnection
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    ReadOnlyError,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

log = logging.getLogger("app.core.queue")

SCHEMES = ("redis+cluster", "rediss+cluster")

# Replies that say the slot is not (or not yet) served by the node asked: a failover,
# a resharding, a cluster still forming. The command did not run.
ELSEWHERE = (MovedError, AskError, ClusterDownError, TryAgainError, ReadOnlyError)


class SlotOwnerUnknown(RedisConnectionError):
    """No node named the slot's master: nothing was sent."""


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict]:
    """`redis+cluster://[user:password@]host:port[,host:port...][/0]` -> the seed
    nodes and the connection options (username, password, ssl)."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"not a Redis Cluster URL: {parts.scheme}://")
    credentials, _, hosts = parts.netloc.rpartition("@")
    nodes = []
    for entry in hosts.split(","):
        host, _, port = entry.rpartition(":")
        nodes.append((host.strip("[]"), int(port)))
    options: dict = {}
    if credentials:
        user, _, password = credentials.partition(":")
        options.update(username=unquote(user) or None, password=unquote(password) or None)
    if parts.scheme == "rediss+cluster":
        options["ssl"] = True
    return nodes, options


class SlotOwner:
    """The master serving one slot: asked of the cluster's nodes when a connection is
    made while it is unknown, forgotten when a node answers that the slot is elsewhere.

    A connection made to a new master shuts down every connection still open to
    another node: a subscription there (an old master, now a replica) would still get
    the messages but not be counted by the new master's PUBLISH, and every publish
    would be refused until it noticed.
    """

    def __init__(self, nodes: list[tuple[str, int]], slot: int, **options) -> None:
        self.nodes = list(nodes)  # the seeds, then every master seen
        self.slot = slot
        self._options = options  # for the CLUSTER SLOTS queries
        self._address: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet = weakref.WeakSet()

    @property
    def known(self) -> tuple[str, int] | None:
        return self._address

    def address(self) -> tuple[str, int]:
        address = self._address
        if address is None:
            address = self._address = self._ask()
        return address

    def moved(self) -> None:
        self._address = None

    def _ask(self) -> tuple[str, int]:
        failures = []
        for host, port in list(self.nodes):
            client = redis.Redis(host=host, port=port, **self._options)
            try:
                ranges = client.execute_command("CLUSTER", "SLOTS")
            except RedisError as exc:
                failures.append(f"{host}:{port}: {exc}")
                continue
            finally:
                client.close()
            for start, end, master, *_ in ranges:
                node = (_text(master[0]) or host, int(master[1]))
                if node not in self.nodes:
                    self.nodes.append(node)  # asked too next time: seeds may go
                if start <= self.slot <= end:
                    return node
            failures.append(f"{host}:{port}: slot {self.slot} is not served")
        raise SlotOwnerUnknown("no node of the Redis Cluster named the master of slot "
                                   f"{self.slot}: " + "; ".join(failures))

    def connected(self, connection: Connection) -> None:
        address = (connection.host, connection.port)
        with self._lock:
            stale = [c for c in self._connections if (c.host, c.port) != address]
            self._connections.add(connection)
        for other in stale:
            log.info("slot %d moved to %s:%d: a connection to %s:%d closed", self.slot,
                     *address, other.host, other.port)
            cut(other)
            with self._lock:
                self._connections.discard(other)


def cut(connection: Connection) -> None:
    """End `connection` under whoever uses it: a reader blocked on it reads the end of
    the stream at once (a close from another green thread is not always noticed), and
    reconnects."""
    sock = connection._sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class SlotOwnerMixin:
    def __init__(self, *, slot_owner: SlotOwner, **kwargs) -> None:
        self.slot_owner = slot_owner
        super().__init__(**kwargs)

    def connect(self) -> None:
        if self._sock is not None:
            return
        self.host, self.port = self.slot_owner.address()
        try:
            super().connect()
        except RedisConnectionError:
            self.slot_owner.moved()  # (asked again: a failover may have moved it)
            raise
        self.slot_owner.connected(self)

    def read_response(self, *args, **kwargs):
        try:
            return super().read_response(*args, **kwargs)
        except ELSEWHERE as exc:
            self.slot_owner.moved()
            self.disconnect()
            raise RedisConnectionError(f"slot {self.slot_owner.slot} is not served by "
                                       f"{self.host}:{self.port}: {exc}") from exc


class SlotOwnerConnection(SlotOwnerMixin, Connection):
    pass


class SlotOwnerSSLConnection(SlotOwnerMixin, SSLConnection):
    pass


def slot_owner(url: str, channel: str, **options) -> SlotOwner:
    """The owner of `channel`'s slot, for the cluster of `url`."""
    nodes, credentials = parse_cluster_url(url)
    query = {"socket_connect_timeout": options.get("socket_connect_timeout"),
             "socket_timeout": options.get("socket_connect_timeout"), **credentials}
    return SlotOwner(nodes, key_slot(channel.encode()), **query)


def cluster_client(owner: SlotOwner, url: str, *, pool_class=redis.ConnectionPool,
                   **options) -> redis.Redis:
    """A plain client whose connections go to `owner`'s master."""
    _, credentials = parse_cluster_url(url)
    ssl = credentials.pop("ssl", False)
    pool = pool_class(connection_class=SlotOwnerSSLConnection if ssl else SlotOwnerConnection,
                      slot_owner=owner, **credentials, **options)
    return redis.Redis(connection_pool=pool)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")
