"""Client managers: chosen by MESSAGE_QUEUE_URL; the Redis one waits instead of dropping."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
import redis

from app.core.errors import QueueUnavailable
from app.core.queue import (
    LocalManager,
    Membership,
    RedisQueueManager,
    SetView,
    create_manager,
)
from app.core.queue.routes import ROUTING_MARK
from app.core.queue.scripts import BORN_SHA


def test_empty_url_is_the_in_memory_manager(settings):
    assert isinstance(create_manager(settings), LocalManager)
    with pytest.raises(RuntimeError, match="MESSAGE_QUEUE_URL"):
        create_manager(settings, write_only=True)


@pytest.mark.parametrize("url, client_class", [
    ("redis://127.0.0.1:6390/0", redis.Redis),
    ("rediss://127.0.0.1:6390/0", redis.Redis),
    ("redis+sentinel://127.0.0.1:26390,127.0.0.1:26391/0/mymaster", redis.Redis),
    ("redis+cluster://127.0.0.1:6390,127.0.0.1:6391", redis.Redis),
])
def test_redis_urls_build_the_redis_manager(settings, url, client_class):
    manager = create_manager(replace(settings, message_queue_url=url))
    assert isinstance(manager, RedisQueueManager)
    assert isinstance(manager.publisher(), client_class)  # built lazily, nothing connects


def test_ssl_scheme_uses_tls_connections(settings):
    manager = create_manager(replace(settings, message_queue_url="rediss://127.0.0.1:6390/0"))
    assert manager.publisher().connection_pool.connection_class is redis.SSLConnection
    cluster = create_manager(replace(settings, message_queue_channel="{rt}", message_queue_url=(
        "rediss+cluster://127.0.0.1:6390?ssl_ca_certs=/etc/ca.pem")))
    pool = cluster.publisher().connection_pool
    assert issubclass(pool.connection_class, redis.SSLConnection)
    assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"  # (the URL's options)


def test_a_broken_subscription_is_not_made_again_behind_the_listener(settings, private_redis):
    """redis-py's retry reconnects and subscribes again before counting attempts: a
    subscription the listener gave up would be counted by publishes, never read."""
    manager = create_manager(replace(settings, message_queue_url=private_redis.url))
    pubsub = manager.subscriber().pubsub()
    pubsub.subscribe("watched")
    client = redis.Redis.from_url(private_redis.url)
    assert client.pubsub_numsub("watched")[0][1] == 1
    client.client_kill_filter(_type="pubsub")
    with pytest.raises(redis.ConnectionError):
        while True:
            pubsub.get_message(timeout=1)
    assert client.pubsub_numsub("watched")[0][1] == 0

    # nor when another green thread's command broke it (a route's subscribe): the next
    # read reconnects, and redis-py would subscribe again unseen
    manager.connect_redis()
    manager.pubsub.subscribe("watched")
    assert client.pubsub_numsub("watched")[0][1] == 1
    manager.pubsub.connection.disconnect()
    with pytest.raises(redis.ConnectionError, match="subscribed again by its listener only"):
        manager.pubsub.get_message(timeout=1)
    assert client.pubsub_numsub("watched")[0][1] == 0
    # the same when that other green thread's own command reconnects it: the listener's
    # next read fails too, instead of waiting on a connection subscribed to nothing
    manager.pubsub.connection.disconnect()
    with pytest.raises(redis.ConnectionError):
        manager.pubsub.subscribe("another room")
    with pytest.raises(redis.ConnectionError):
        manager.pubsub.get_message(timeout=1)


def test_many_concurrent_publishers_share_a_small_pool_without_loss(settings, redis_server):
    """More publishers than connections: they wait for a connection, none is dropped."""
    settings = replace(settings, message_queue_url=redis_server.url, redis_max_connections=2,
                       message_queue_channel="pool-test")
    manager = create_manager(settings, write_only=True)
    client = redis.Redis.from_url(redis_server.url)
    set_born(client, manager, 3_000)  # a set of workers (none) long up
    listener = client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe("pool-test")
    errors: list[Exception] = []

    def publish(i: int) -> None:
        try:
            for j in range(20):
                manager._publish({"method": "emit", "n": i * 100 + j})
        except Exception as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    received = set()
    deadline = time.monotonic() + 10
    while len(received) < 30 * 20 and time.monotonic() < deadline:
        message = listener.get_message(timeout=1)  # None for the subscribe confirmation too
        if message is not None:
            received.add(manager.json.loads(message["data"])["n"])
    assert errors == []
    assert len(received) == 30 * 20
    assert manager.publisher().connection_pool.max_connections == 2


def test_publish_failure_is_raised_not_dropped(settings):
    settings = replace(settings, message_queue_url="redis://127.0.0.1:1/0", publish_attempts=2,
                       redis_socket_timeout=0.5)
    manager = create_manager(settings, write_only=True)
    with pytest.raises(QueueUnavailable):
        manager.emit("message", {"text": "x"}, namespace="/chat", room="room:a")
    assert manager.check().startswith("message queue unreachable")


def test_membership_outlives_an_outage_and_drops_the_missing_once_fresh():
    members = Membership(ttl=2.0, grace=5.0)
    members.update([b"a", b"b", b"c"], now=time.monotonic())
    assert members.expected() == 3
    # Redis restarted (empty set) and the queue works again at t=10: the set refills
    # as workers resubscribe and register; until it has been up for the grace (not
    # just ttl: a worker may still be reconnecting) nobody looks gone
    members.queue_restored(now=10.0)
    members.update([b"a"], now=10.5)
    members.update([b"a", b"b"], now=14.0)  # b back after 4 s
    assert members.expected() == 3
    members.update([b"a", b"b"], now=15.5)  # c never came back (killed meanwhile)
    assert members.expected() == 2
    members.forget("b")  # a drained worker said it leaves
    members.update([b"a", b"b"], now=16.0)  # and its last registration is ignored
    assert members.expected() == 1



def test_membership_is_incomplete_until_a_reborn_set_has_refilled():
    """A restarted Redis, whether an outage was noticed or not: the set refills as
    workers register again, and until it has existed for REFILL, publishes are
    refused; workers remembered from before stay expected meanwhile."""
    def view(now, born, *hosts):
        return SetView([now, born, 0, [x for h in hosts for x in (h, now)]])

    members = Membership(ttl=2.0, grace=5.0)
    members.read(view(100_000, b"run1:50000", "a", "b"), now=1.0)
    assert members.complete and members.expected() == 2
    members.read(view(101_000, b"run2:100900", "a"), now=2.0)  # reborn 0.1 s ago: only a
    assert not members.complete
    members.read(view(103_000, b"run2:100900", "a", "c"), now=4.0)  # refilled: c is new
    assert members.complete and members.expected() == 3  # b still expected (grace)
    members.read(view(108_000, b"run2:100900", "a", "c"), now=9.0)
    assert members.expected() == 2  # b missing past the grace: gone
    assert not SetView([5_000, b"", 0, []]).refilled()  # nobody registered since the restart


@pytest.fixture()
def fresh_worker(settings, redis_server):
    """A worker's manager (not started: it publishes inline) on a channel of its own."""
    settings = replace(settings, message_queue_url=redis_server.url, publish_attempts=1,
                       message_queue_channel=f"fresh-{time.monotonic_ns()}")
    manager = create_manager(settings)
    manager.announced = threading.Event()
    client = redis.Redis.from_url(redis_server.url)
    yield manager, client
    client.close()


def redis_ms(client) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def set_born(client, manager, ago_ms: int, run: str | None = None) -> None:
    """The set of live workers started `ago_ms` ago, in this run of Redis (or `run`)."""
    run = run or client.info("server")["run_id"]
    client.set(manager.born_key, f"{run}:{redis_ms(client) - ago_ms}")


def test_a_worker_refuses_until_it_has_read_a_set_that_holds_every_worker(fresh_worker):
    manager, client = fresh_worker
    with pytest.raises(QueueUnavailable, match="registering again"):
        manager._publish({"method": "emit"})  # never read: an empty view is not "nobody"
    set_born(client, manager, 0)  # a Redis that just came back
    manager._read(manager._members(register=False))
    with pytest.raises(QueueUnavailable, match="registering again"):
        manager._publish({"method": "emit"})
    set_born(client, manager, 3_000)
    client.zadd(manager.members_key, {"other": redis_ms(client)})  # live, not subscribed
    manager._read(manager._members(register=False))
    with pytest.raises(QueueUnavailable, match="0 of 1 workers"):
        manager._publish({"method": "emit"})
    listener = client.pubsub()
    listener.subscribe(manager.channel)
    assert listener.get_message(timeout=1)["type"] == "subscribe"
    assert manager._publish({"method": "emit"}) == 1
    set_born(client, manager, 0)  # reborn since the last read
    with pytest.raises(QueueUnavailable, match="registering again"):
        manager._publish({"method": "emit"})
    listener.close()


def test_a_set_from_an_earlier_run_of_redis_starts_anew(fresh_worker):
    """A restarted Redis may bring the set and its birth back (an AOF, a promoted
    replica): they belong to the last run, so publishes are refused and the set refills."""
    manager, client = fresh_worker
    set_born(client, manager, 3_000)
    client.zadd(manager.members_key, {"other": redis_ms(client)})
    manager._read(manager._members(register=False))
    assert manager.membership.complete
    set_born(client, manager, 3_000, run="0" * 40)  # as an AOF would restore it
    with pytest.raises(QueueUnavailable, match="registering again"):
        manager._publish({"method": "emit"})
    view = manager._members(register=False)
    assert (view.born, view.scores) == ("", {})  # the last run's entries are gone
    assert not client.exists(manager.born_key)


def test_a_worker_is_announced_once_every_other_worker_read_it(fresh_worker):
    manager, client = fresh_worker
    set_born(client, manager, 3_000)
    client.zadd(manager.members_key, {"other": redis_ms(client)})
    manager._subscribed = True  # (its listener is not started here)
    manager._beat()  # registered
    assert not manager.announced.is_set()  # "other" last read the set before that
    while redis_ms(client) <= manager._first_registration:
        time.sleep(0.001)
    client.zadd(manager.members_key, {"other": redis_ms(client)})  # its next heartbeat
    manager._beat()
    assert manager.announced.is_set()
    manager._leaving = threading.Event()  # a draining worker never registers again
    client.zrem(manager.members_key, manager.host_id)
    assert manager._beat() is False
    assert client.zscore(manager.members_key, manager.host_id) is None



def test_a_redis_that_lost_the_scripts_refuses_what_they_did_not_run(settings, private_redis):
    """Publishes send their scripts by hash alone (no SCRIPT EXISTS round trip first).
    A restarted Redis answers NOSCRIPT: an append that did not run is refused, never
    sent again behind a later seq (receivers would drop it as a repeat), and without
    the set's birth the batch is refused; the scripts are back for the next one."""
    settings = replace(settings, message_queue_url=private_redis.url, publish_attempts=1)
    manager = create_manager(settings, logged={"/chat": "room:"})
    client = redis.Redis.from_url(private_redis.url)
    set_born(client, manager, 3_000)
    manager._read(manager._members(register=False))
    stream = manager.log.key_for("/chat", "room:a")
    # the first batch loads the scripts first: a fresh Redis has none
    manager.emit("message", {"text": "first"}, namespace="/chat", room="room:a")
    assert client.xlen(stream) == 1

    client.script_flush()
    with pytest.raises(QueueUnavailable, match="not sent"):
        manager.emit("message", {"text": "lost?"}, namespace="/chat", room="room:a")
    assert client.xlen(stream) == 1 and client.script_exists(manager.scripts.append_sha, BORN_SHA) == [
        True, True]
    manager.emit("message", {"text": "sent"}, namespace="/chat", room="room:a")
    assert client.xlen(stream) == 2

    client.script_flush()
    with pytest.raises(QueueUnavailable, match="registering again"):
        manager._publish({"method": "emit"})  # published, but its birth is unknown
    assert manager._publish({"method": "emit"}) == 0  # no worker is registered


def test_a_routed_room_must_reach_its_live_holders_and_no_other_worker(settings, redis_server):
    """A publish to a routed room is judged against the live workers holding it
    (app/core/queue/routes.py); one to the shared channel against every live worker."""
    settings = replace(settings, message_queue_url=redis_server.url, publish_attempts=1,
                       message_queue_channel=f"routed-{time.monotonic_ns()}")
    manager = create_manager(settings, logged={"/chat": "room:"})
    client = redis.Redis.from_url(redis_server.url)
    set_born(client, manager, 3_000)
    holder, elsewhere = "holder" + ROUTING_MARK, "elsewhere" + ROUTING_MARK
    client.zadd(manager.members_key, {holder: redis_ms(client), elsewhere: redis_ms(client)})
    manager._read(manager._members(register=False))
    channel = manager.route_of("/chat", "room:a")
    typing = {"method": "emit", "event": "typing", "data": [{}], "namespace": "/chat",
              "room": "room:a"}

    # a routing worker that has not registered its rooms since the set's birth (they
    # may have been lost with Redis) is expected by every room
    with pytest.raises(QueueUnavailable, match="0 of 2 workers"):
        manager._publish(typing)
    client.sadd(manager.registered_key(manager.membership.born), holder, elsewhere)
    assert manager._publish(typing) == 0  # nobody holds the room: nobody to reach
    client.sadd(manager.holders_key(channel), holder, "dead" + ROUTING_MARK)  # (not alive)
    with pytest.raises(QueueUnavailable, match="0 of 1 workers"):
        manager._publish(typing)
    with pytest.raises(QueueUnavailable, match="0 of 1 workers"):  # logged: the same
        manager.emit("message", {"text": "logged"}, namespace="/chat", room="room:a")
    listener = client.pubsub()
    listener.subscribe(channel)
    assert listener.get_message(timeout=1)["type"] == "subscribe"
    assert manager._publish(typing) == 1
    manager.emit("message", {"text": "logged"}, namespace="/chat", room="room:a")
    assert listener.get_message(timeout=1)["channel"] == channel.encode()  # (the typing)
    with pytest.raises(QueueUnavailable, match="0 of 2 workers"):  # the shared channel
        manager._publish({**typing, "room": None})

    # a live worker that reads the shared channel alone (an earlier release): the
    # room's messages go there, and every live worker must hear them
    client.zadd(manager.members_key, {"earlier": redis_ms(client)})
    manager._read(manager._members(register=False))
    with pytest.raises(QueueUnavailable, match="0 of 3 workers"):
        manager._publish(typing)
    listener.close()


def test_a_gone_workers_holder_entries_are_reaped_unless_it_came_back(fresh_worker):
    manager, client = fresh_worker
    manager.routed["/chat"] = "room:"
    channel = manager.route_of("/chat", "room:a")
    for host in ("gone-r", "back-r"):
        client.sadd(manager.routes_key, host)
        client.sadd(manager._index_key(host), channel)
        client.sadd(manager.holders_key(channel), host)
    manager.reap_routes(alive=set())  # absent once: suspects
    client.zadd(manager.members_key, {"back-r": redis_ms(client)})  # registered again since
    manager.reap_routes(alive=set())  # (a view from before it came back)
    assert client.smembers(manager.holders_key(channel)) == {b"back-r"}
    assert client.smembers(manager.routes_key) == {b"back-r"}
    assert not client.exists(manager._index_key("gone-r"))


def test_a_worker_added_anew_is_unmarked_until_its_rooms_are_registered_again(fresh_worker):
    """Its holder entries may be gone (reaped, or lost with Redis): until it has added
    them again, every room's publish expects it (app/core/queue/routes.py)."""
    manager, client = fresh_worker
    set_born(client, manager, 3_000)
    manager._subscribed = True  # (its listener is not started here)
    manager._beat()
    marks = manager.registered_key(manager.membership.born)
    assert client.smembers(marks) == {manager.host_id.encode()}

    client.zrem(manager.members_key, manager.host_id)  # dropped from the set, say
    with manager._route_lock:  # (a join under way: its rooms wait for the next beat)
        manager._beat()  # in the set again: the script took the mark away
    assert client.zscore(manager.members_key, manager.host_id) is not None
    assert client.smembers(marks) == set()
    manager._beat()  # its next heartbeat: its rooms again, then the mark
    assert client.smembers(marks) == {manager.host_id.encode()}
    assert client.pttl(marks) > 0  # (it lives as long as the set)
