"""Partitions of the queue (app/core/queue/partitions.py): which partition a room is in,
each partition's hash tag, and the offsets that list a position in each."""

from __future__ import annotations

import pytest
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from app.core.queue.partitions import (
    decode_offset,
    encode_offset,
    partition_channel,
    partition_of,
)


def test_one_partition_keeps_the_queues_names_and_offsets():
    assert partition_of(1, "/chat", "room:a") == 0
    assert partition_channel("{realtime}", 0, 1) == "{realtime}"
    assert encode_offset([(1700000000000, 3)]) == "1700000000000-3"
    assert decode_offset("1700000000000-3", 1) == [(1700000000000, 3)]


def test_rooms_spread_over_the_partitions_the_same_way_on_every_worker():
    placed = [partition_of(4, "/chat", f"room:{n}") for n in range(400)]
    assert placed == [partition_of(4, "/chat", f"room:{n}") for n in range(400)]
    assert all(60 <= placed.count(index) <= 140 for index in range(4)), placed
    assert partition_of(4, "/chat", None) == partition_of(4, "/chat", None)  # announcements


@pytest.mark.parametrize("count", [2, 3, 6, 16])
def test_the_partitions_slots_are_evenly_spaced_round_the_first(count):
    first = key_slot(b"realtime")
    for index in range(count):
        channel = partition_channel("{realtime}", index, count)
        slot = key_slot(channel.encode())  # (the key hashes by its tag alone)
        assert slot == key_slot(f"{channel}:log:/chat:room:x".encode())
        assert slot == (first + round(index * REDIS_CLUSTER_HASH_SLOTS / count)
                        ) % REDIS_CLUSTER_HASH_SLOTS, (index, slot)
    # so masters holding equal ranges (as redis-cli makes them) get one each
    masters = [slot * 3 // REDIS_CLUSTER_HASH_SLOTS
               for slot in (key_slot(partition_channel("{realtime}", i, 3).encode())
                            for i in range(3))]
    assert sorted(masters) == [0, 1, 2]
    # on a single Redis, plain names
    assert partition_channel("realtime", 2, count) == "realtime.2"


def test_an_offset_lists_a_position_per_partition_and_refuses_others():
    positions = [(1700000000000, 0), (0, 0), (1700000000123, 7)]
    offset = encode_offset(positions)
    assert offset == "1700000000000-0.0-0.1700000000123-7"
    assert decode_offset(offset, 3) == positions
    for wrong in ("1700000000000-0", "a.b.c", offset + ".1-1"):
        with pytest.raises(ValueError):
            decode_offset(wrong, 3)
