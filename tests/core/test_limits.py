"""Connection limits shared by the workers through Redis (app/core/limits.py)."""

from __future__ import annotations

import time

import redis

from app.core.limits import ConnectionLimit, SharedCounts


def test_a_shared_limit_is_checked_and_counted_in_one_step(private_redis):
    client = redis.Redis(port=private_redis.port)
    now_ms = int(time.time() * 1000)
    client.zadd("t:workers", {"a": now_ms, "b": now_ms})  # two live workers

    def worker(host: str) -> ConnectionLimit:
        return ConnectionLimit(2, "user", SharedCounts(lambda: client, "t:conns", host,
                                                       "t:workers", member_ttl=60))

    a, b = worker("a"), worker("b")
    assert a.admit("a1", "alice") is None and b.admit("b1", "alice") is None
    # the last slot was taken on the other worker: refused here, and not counted
    assert a.admit("a2", "alice").code == "too_many_connections"
    assert client.hget("t:conns:a", "user:alice") == b"1"
    b.release("b1")
    assert a.admit("a2", "alice") is None
    assert (client.hget("t:conns:a", "user:alice"), client.hget("t:conns:b", "user:alice")) \
        == (b"2", None)  # a field at 0 leaves the hash
    # a Redis that lost the hash (restarted without persistence) gets it back
    client.delete("t:conns:a")
    a.shared.refresh()
    assert client.hget("t:conns:a", "user:alice") == b"2"


def test_a_connection_redis_could_not_count_is_not_uncounted(private_redis):
    client = redis.Redis(port=private_redis.port)
    limit = ConnectionLimit(5, "user", SharedCounts(lambda: client, "t:conns", "a",
                                                    "t:workers", member_ttl=60))
    private_redis.stop()
    assert limit.admit("a1", "alice") is None  # let through: this worker's limit holds
    private_redis.start()
    limit.release("a1")
    assert client.hget("t:conns:a", "user:alice") is None  # not -1
