"""The message queue through Redis Sentinel (MESSAGE_QUEUE_URL=redis+sentinel://): the
workers follow a failover under traffic, losing no acked message."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers import RedisSentinelServer, traffic_through, wait_for


@pytest.fixture()
def sentinel():
    server = RedisSentinelServer().start()
    yield server
    server.cleanup()


def test_a_failover_under_traffic_loses_no_acked_message(sentinel, start_own_server, connect):
    old = sentinel.master
    traffic_through(sentinel.fail_over, sentinel.url, start_own_server, connect,
                    f"s-{uuid.uuid4().hex[:12]}")
    # the workers subscribed on the new master, none left on the old one (now a replica)
    new = sentinel.replica
    wait_for(lambda: new.client().pubsub_numsub("realtime")[0][1] == 2,
             message="both workers subscribed on the new master")
    assert old.client().pubsub_numsub("realtime")[0][1] == 0
