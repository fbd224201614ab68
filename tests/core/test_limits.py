"""Connection limits shared by the workers through Redis (app/core/limits.py)."""

from __future__ import annotations

import threading
import time

import redis

from app.core.limits import _COUNT_SCRIPT, ConnectionLimit, SharedCounts
from tests.helpers import wait_for


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


def test_a_workers_admits_and_releases_go_in_batches_and_stay_exact(private_redis):
    """Connects that come while a round trip is out wait for the next one, together
    (a connect storm paid a round trip each): two script calls for ten admits, and the
    limit still exact with the other worker's connections."""
    client = redis.Redis(port=private_redis.port)
    now_ms = int(time.time() * 1000)
    client.zadd("t:workers", {"a": now_ms, "b": now_ms})
    shared = SharedCounts(lambda: client, "t:conns", "a", "t:workers", member_ttl=60)
    shared.create_event = threading.Event
    shared.spawn = lambda loop: threading.Thread(target=loop, args=(time.sleep,),
                                                 daemon=True).start()
    limit = ConnectionLimit(10, "user", shared)
    other = ConnectionLimit(10, "user", SharedCounts(lambda: client, "t:conns", "b",
                                                     "t:workers", member_ttl=60))
    for n in range(6):
        assert other.admit(f"b{n}", "alice") is None
    shared._script = client.register_script(_COUNT_SCRIPT)  # (loaded: no SCRIPT LOAD call)
    calls = _script_calls(client)
    results: dict[str, object] = {}

    def connect(n: int) -> None:
        results[f"a{n}"] = limit.admit(f"a{n}", "alice")

    client.client_pause(10_000, all=False)  # the first batch waits in Redis
    threads = [threading.Thread(target=connect, args=(n,)) for n in range(10)]
    threads[0].start()
    wait_for(lambda: shared._wakeup is not None and not shared._admits
             and not shared._wakeup.is_set(), message="the first admit to be sent")
    for thread in threads[1:]:
        thread.start()
    wait_for(lambda: len(shared._admits) == 9, message="the other admits to wait")
    client.client_unpause()
    for thread in threads:
        thread.join(10)
    admitted = [c for c, refused in results.items() if refused is None]
    assert len(admitted) == 4  # 10, with the other worker's 6
    assert client.hget("t:conns:a", "user:alice") == b"4"
    assert _script_calls(client) - calls == 2
    for connection in admitted:
        limit.release(connection)
    wait_for(lambda: client.hget("t:conns:a", "user:alice") is None,
             message="the releases to be written")
    assert _script_calls(client) - calls <= 4


def _script_calls(client) -> int:
    return client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)


def test_counts_lost_with_a_failed_round_trip_are_written_again(private_redis):
    """A release lost with its round trip (or an admit Redis ran but whose answer was
    lost) would hold a slot for the worker's life: the next round trip first writes the
    worker's hash again from its own counts."""
    client = redis.Redis(port=private_redis.port)
    shared = SharedCounts(lambda: client, "t:conns", "a", "t:workers", member_ttl=60)
    limit = ConnectionLimit(5, "user", shared)
    assert limit.admit("a1", "alice") is None and limit.admit("a2", "alice") is None
    script = shared._script

    def unreachable(**kwargs):
        raise redis.ConnectionError("the message queue is down")

    shared._script = unreachable
    limit.release("a1")  # lost
    assert client.hget("t:conns:a", "user:alice") == b"2"
    shared._script = script
    assert limit.admit("a3", "alice") is None
    assert client.hget("t:conns:a", "user:alice") == b"2"  # a2 and a3


def test_a_connection_gone_while_its_admit_waited_is_not_counted(private_redis):
    """A connection ended while Redis was asked (a drain, a twin's end) has released
    already: its count, once Redis answers, is released too."""
    client = redis.Redis(port=private_redis.port)
    shared = SharedCounts(lambda: client, "t:conns", "a", "t:workers", member_ttl=60)
    shared.create_event = threading.Event
    shared.spawn = lambda loop: threading.Thread(target=loop, args=(time.sleep,),
                                                 daemon=True).start()
    limit = ConnectionLimit(5, "user", shared)
    client.client_pause(10_000, all=False)
    done = threading.Event()
    threading.Thread(target=lambda: (limit.admit("a1", "alice"), done.set())).start()
    wait_for(lambda: "a1" in limit.key_of and not shared._admits,
             message="the admit to be sent")
    limit.release("a1")
    client.client_unpause()
    assert done.wait(10)
    wait_for(lambda: client.hget("t:conns:a", "user:alice") is None,
             message="the count to be released")
    assert "a1" not in limit.counted and not shared.counts
