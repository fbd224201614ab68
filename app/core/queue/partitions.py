"""Partitions of the queue (MESSAGE_QUEUE_PARTITIONS): each logged room, with its
stream, ids, holders and channel, belongs to one partition, a queue of its own under a
hash tag of its own, so that on a Redis Cluster the rooms spread over the masters.

Each partition is a whole queue (a `RedisQueueManager`: its publisher, subscription,
set of live workers, catch-up and position in its log): the first also holds
everything that is not a logged room's (presence, idempotency claims, recovery
records, limits, the control bus, the shared channel); a logged namespace's
announcements are a room of their own, in whichever partition they hash to. What a
partition guarantees is what the queue guarantees (docs/architecture.md); across
partitions there is no common order, so:

- a room's order holds, and one sender's order across rooms of one partition; one
  sender's messages to rooms of two partitions can reach a member of both in either
  order;
- a socket's offset (connection-state recovery) lists this worker's position in every
  partition (`<id>.<id>...`): a connection delivers in order, so the last offset a
  client got says exactly what it got of each partition, and a recovery replays each
  partition's rooms after their own position. With one partition the offset is the id.
"""

from __future__ import annotations

import functools
import itertools
import zlib
from binascii import crc_hqx

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from app.core.history import format_id, parse_id

NONE = (0, 0)  # the position in a partition nothing was delivered from yet


def partition_of(count: int, namespace: str, room) -> int:
    """The partition of a room (None: the namespace's announcements)."""
    if count == 1:
        return 0
    name = "*" if room is None else str(room)
    return zlib.crc32(f"{namespace}\x00{name}".encode()) % count


@functools.lru_cache(maxsize=256)
def partition_channel(channel: str, index: int, count: int) -> str:
    """The channel (prefix of every key) of partition `index`: the first keeps the
    queue's own. On a Redis Cluster (a hash-tagged channel) partition k's tag hashes to
    the slot k/count of the way round from the first's: the partitions are as far
    apart as they can be, so on a cluster whose masters hold equal ranges of slots
    (as `redis-cli --cluster create` makes them) `count` masters get one each."""
    if index == 0:
        return channel
    start = channel.find("{")
    end = channel.find("}", start + 1)
    if start < 0 or end <= start + 1:
        return f"{channel}.{index}"
    tag = channel[start + 1:end]
    target = (key_slot(tag.encode()) + round(index * REDIS_CLUSTER_HASH_SLOTS / count)
              ) % REDIS_CLUSTER_HASH_SLOTS
    head = f"{tag}.{index}.".encode()
    for salt in itertools.count():  # (16,384 tries on average, a few ms: Redis's CRC16)
        if crc_hqx(head + b"%d" % salt, 0) % REDIS_CLUSTER_HASH_SLOTS == target:
            return f"{channel[:start + 1]}{tag}.{index}.{salt}{channel[end:]}"
    raise AssertionError("unreachable")


def partition_mark(count: int) -> str:
    """The part of a worker's id that says its partitions (none: one, as before them)."""
    return "" if count == 1 else f"-p{count}"


def foreign_workers(hosts, count: int) -> set[str]:
    """The workers among `hosts` whose queue has another number of partitions: their
    rooms' messages go through other keys and channels, so a publish judged without
    them could be acked ok while their clients missed it (a misconfigured deployment,
    or a change of MESSAGE_QUEUE_PARTITIONS made by a rolling deploy)."""
    return {host for host in hosts if _count_of(host) != count}


def _count_of(host: str) -> int:
    for part in reversed(host.split("-")[1:]):
        if part.startswith("p") and part[1:].isdigit():
            return int(part[1:])
    return 1


def encode_offset(positions: list) -> str:
    """A socket's offset: its position in each partition (one: the id alone)."""
    return ".".join(format_id(p) for p in positions)


def decode_offset(offset: str, count: int) -> list[tuple[int, int]]:
    """A client's offset -> its position in each of `count` partitions; ValueError
    when it is not one of this deployment's (another partition count, or garbage)."""
    parts = offset.split(".")
    if len(parts) != count:
        raise ValueError("not an offset of this deployment's partitions")
    return [parse_id(part) for part in parts]
