"""Redis Cluster through plain connections to the master of one hash slot.

Every key and channel of a deployment starts with MESSAGE_QUEUE_CHANNEL, which on a
cluster carries a hash tag (`{realtime}`): they all live in one slot, and a plain
redis-py client connected to that slot's master serves the whole queue unchanged:
its scripts, pipelines, transactions and pub/sub (whose PUBLISH counts are then
counted where every worker subscribes). redis-py's RedisCluster routes command by
command instead, and its pipelines, scripts and pub/sub differ from the plain
client's in ways the queue's guarantee depends on.

What this module reads from redis-py beyond its documented API: a connection class
may choose its address whenever it connects (`connect_check_health`, which every
connect and reconnect of redis-py goes through), see every reply first
(`read_response`), and tell it is open by its `_sock`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import weakref
from urllib.parse import unquote, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
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
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from app.adapters.redis_hooks import ResubscribeRefused

log = logging.getLogger("app.core.queue")

SCHEMES = ("redis+cluster", "rediss+cluster")

# Replies that say the slot is served elsewhere (a failover, a resharding): the command
# did not run, and the master is asked again.
ELSEWHERE = (MovedError, AskError, ReadOnlyError)
# Replies of a cluster that cannot serve the slot right now (forming, failing over):
# the command did not run either; the same master is tried again.
NOT_NOW = (ClusterDownError, TryAgainError)
# A lookup's own connections: short, never retried (a frozen node must not hold it).
LOOKUP_TIMEOUT = 1.0


class SlotOwnerUnknown(RedisConnectionError):
    """No node named the slot's master: nothing was sent."""

    nothing_sent = True  # (app/adapters/redis_hooks.py)


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict]:
    """`redis+cluster://[user:password@]host:port[,host:port...][/0][?options]` -> the
    seed nodes, and the connection options redis-py reads from a URL of the first
    (username, password, TLS and its `ssl_*` query options, ...)."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"not a Redis Cluster URL: {parts.scheme}://")
    credentials, _, hosts = parts.netloc.rpartition("@")
    nodes = []
    for entry in hosts.split(","):
        host, _, port = entry.rpartition(":")
        nodes.append((unquote(host.strip("[]")), int(port)))
    single = urlunsplit((parts.scheme.removesuffix("+cluster"),
                         (credentials + "@" if credentials else "") + hosts.split(",")[0],
                         parts.path, parts.query, ""))
    options = {key: value for key, value in redis.connection.parse_url(single).items()
               if key not in ("host", "port", "db", "path")}
    return nodes, options


class SlotOwner:
    """The master serving one slot: asked of the cluster's nodes when a connection is
    made while it is unknown, forgotten when a node answers that the slot is elsewhere
    or a connection to it fails.

    A connection made to a new master shuts down every connection still open to
    another node: a subscription there (an old master, now a replica) would still get
    the messages but not be counted by the new master's publishes, and every publish
    would be refused until it noticed.
    """

    def __init__(self, nodes: list[tuple[str, int]], slot: int, ssl: bool = False,
                 **options) -> None:
        self.nodes = list(nodes)  # the seeds, then every master seen
        self.slot = slot
        self.ssl = ssl
        self.options = options  # every connection's, the lookups' too (credentials, TLS)
        self._address: tuple[str, int] | None = None
        self._generation = 0  # one more at each `moved`: a lookup begun before is stale
        self._lookup = threading.Lock()  # one lookup at a time
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet = weakref.WeakSet()

    @property
    def known(self) -> tuple[str, int] | None:
        return self._address

    def address(self) -> tuple[str, int]:
        if (address := self._address) is not None:
            return address
        with self._lookup:
            if (address := self._address) is not None:
                return address  # (found while this one waited)
            generation = self._generation
            address = self._ask()
            if generation == self._generation:
                self._address = address
            return address

    def moved(self, address: tuple[str, int] | None = None) -> None:
        """Forget the master (only if it is still `address`: a late error from a
        connection to an old master does not undo a lookup made since)."""
        if address is None or address == self._address:
            self._generation += 1
            self._address = None

    def _ask(self) -> tuple[str, int]:
        """The master that claims the slot with the highest configuration epoch, as the
        reachable nodes see the cluster (a restarted old master claims it for a moment,
        with an older epoch, until it hears of the failover). Addresses as CLUSTER
        SLOTS gives them (the cluster's preferred endpoint: an IP, or a hostname that
        TLS certificates name); epochs and health from CLUSTER NODES."""
        claims: dict[tuple[str, int], int] = {}
        failures = []
        for host, port in list(self.nodes):
            client = redis.Redis(host=host, port=port, socket_connect_timeout=LOOKUP_TIMEOUT,
                                 socket_timeout=LOOKUP_TIMEOUT, retry=Retry(NoBackoff(), 0),
                                 ssl=self.ssl, **self.options)
            try:
                pipe = client.pipeline(transaction=False)
                pipe.execute_command("CLUSTER", "SLOTS")
                pipe.execute_command("CLUSTER", "NODES")
                ranges, nodes = pipe.execute()
            except RedisError as exc:
                failures.append(f"{host}:{port}: {exc}")
                continue
            finally:
                client.close()
            epochs = dict(_healthy_masters(_text(nodes)))
            for start, end, master, *_ in ranges:
                node = (_text(master[0]) or host, int(master[1]))
                if node[1] and node not in self.nodes:
                    self.nodes.append(node)  # asked too next time: seeds may go
                epoch = epochs.get(_text(master[2]) if len(master) > 2 else "")
                if start <= self.slot <= end and epoch is not None and node[1]:
                    claims[node] = max(epoch, claims.get(node, -1))
        if claims:
            return max(claims, key=claims.__getitem__)
        raise SlotOwnerUnknown("no node of the Redis Cluster named the master of slot "
                               f"{self.slot}: " + ("; ".join(failures) or "none serves it"))

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


def _healthy_masters(nodes: str):
    """(node id, config epoch) of each master a CLUSTER NODES reply holds healthy."""
    for line in nodes.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        flags = set(fields[2].split(","))
        if "master" in flags and not flags & {"fail", "fail?", "noaddr", "handshake"}:
            yield fields[0], int(fields[6])


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

    # Every (re)connect of redis-py goes through here (`connect`, and the reconnects of
    # its retries, pipelines and pub/sub), so each one goes to the slot's master.
    def connect_check_health(self, *args, **kwargs) -> None:
        if self._sock is not None:
            return
        address = self.slot_owner.address()
        if self._sock is not None:
            return  # (another green thread connected it while this one asked)
        self.host, self.port = address
        try:
            super().connect_check_health(*args, **kwargs)
        except ResubscribeRefused:
            raise  # (connected to the master, fine: the listener subscribes again)
        except (RedisConnectionError, RedisTimeoutError):
            self.slot_owner.moved(address)  # (asked again: a failover may have moved it)
            raise
        self.slot_owner.connected(self)

    def read_response(self, *args, **kwargs):
        try:
            return super().read_response(*args, **kwargs)
        except ELSEWHERE as exc:
            self.slot_owner.moved((self.host, self.port))
            self.disconnect()
            raise RedisConnectionError(f"slot {self.slot_owner.slot} is not served by "
                                       f"{self.host}:{self.port}: {exc}") from exc
        except NOT_NOW as exc:
            raise RedisConnectionError(f"slot {self.slot_owner.slot} cannot be served now: "
                                       f"{exc}") from exc
        except RedisTimeoutError:
            # a frozen or unreachable master (its kernel may still accept connections):
            # asked again at the next connect, which may find the slot elsewhere
            self.slot_owner.moved((self.host, self.port))
            raise


class SlotOwnerConnection(SlotOwnerMixin, Connection):
    pass


class SlotOwnerSSLConnection(SlotOwnerMixin, SSLConnection):
    pass


def slot_owner(url: str, channel: str) -> SlotOwner:
    """The owner of `channel`'s slot, for the cluster of `url` (its options with it)."""
    nodes, options = parse_cluster_url(url)
    ssl = options.pop("connection_class", None) is SSLConnection
    return SlotOwner(nodes, key_slot(channel.encode()), ssl=ssl, **options)


def cluster_client(owner: SlotOwner, *, pool_class=redis.ConnectionPool,
                   **options) -> redis.Redis:
    """A plain client whose connections go to `owner`'s master."""
    pool = pool_class(connection_class=SlotOwnerSSLConnection if owner.ssl else SlotOwnerConnection,
                      slot_owner=owner, **{**owner.options, **options})
    return redis.Redis(connection_pool=pool)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")
