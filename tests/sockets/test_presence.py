"""Presence per room across workers: one join/leave per user (not per socket or tab),
the join ack and GET /api/rooms/<room>/presence, and a killed worker's users leaving."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
import redis
import requests

from tests.helpers import wait_for


@pytest.fixture()
def room():
    return f"p-{uuid.uuid4().hex[:12]}"


def presence_of(client, room):
    return [e for e in client.of("presence") if e["room"] == room]


def test_one_join_and_one_leave_per_user_across_instances(cluster, connect, auth_header, room):
    observer = connect(cluster[1].url, user="observer")
    observer.call("join", {"room": room})
    tabs = [connect(server.url, user="alice") for server in cluster]  # two tabs
    acks = [tab.call("join", {"room": room}) for tab in tabs]
    assert {"id": "alice", "name": "alice", "sockets": 2} in acks[1]["presence"]
    rest = requests.get(f"{cluster[0].url}/api/rooms/{room}/presence",
                        headers=auth_header("observer"), timeout=10).json()
    assert {m["id"]: m["sockets"] for m in rest["members"]} == {"alice": 2, "observer": 1}

    tabs[0].call("leave", {"room": room})
    tabs[1].close()
    wait_for(lambda: len(presence_of(observer, room)) >= 2, message="alice's leave")
    observer.round_trip()
    assert [(e["user"]["id"], e["action"]) for e in presence_of(observer, room)] == \
        [("alice", "join"), ("alice", "leave")]
    rest = requests.get(f"{cluster[0].url}/api/rooms/{room}/presence",
                        headers=auth_header("observer"), timeout=10).json()
    assert [m["id"] for m in rest["members"]] == ["observer"]


def test_a_killed_workers_users_leave_within_seconds(private_redis, start_own_server, connect,
                                                      room):
    survivor, doomed = (start_own_server(MESSAGE_QUEUE_URL=private_redis.url) for _ in range(2))
    observer = connect(survivor.url, user="observer")
    observer.call("join", {"room": room})
    victim = connect(doomed.url, user="victim")
    victim.call("join", {"room": room})
    wait_for(lambda: presence_of(observer, room), message="the victim's join")

    os.kill(min(doomed.worker_pids()), signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: len(presence_of(observer, room)) == 2, message="the victim's leave")
    assert time.monotonic() - killed < 8  # membership (~2.5 s) + a heartbeat
    assert presence_of(observer, room)[-1]["user"]["id"] == "victim"
    assert presence_of(observer, room)[-1]["action"] == "leave"


def test_presence_never_scans_the_keyspace(private_redis, start_own_server, connect, room,
                                           settings):
    """(Every worker's heartbeat SCANned every key each 0.5 s: 121 ms per 200,000
    unrelated keys, in the loop that keeps the worker registered.)"""
    r = redis.Redis(port=private_redis.port)
    # (a Redis whose revocation index is complete: its one-time SCAN for bans stored
    # before the index, app/core/revocation.py, is not the heartbeat's)
    r.set(f"{settings.message_queue_channel}:revocations:complete", "1")
    server = start_own_server(MESSAGE_QUEUE_URL=private_redis.url)
    alice = connect(server.url, user="alice")
    assert alice.call("join", {"room": room})["ok"]
    r.config_resetstat()

    def heartbeats() -> int:
        return r.info("commandstats").get("cmdstat_smembers", {}).get("calls", 0)

    wait_for(lambda: heartbeats() >= 4, message="a few presence heartbeats")
    assert "cmdstat_scan" not in r.info("commandstats")
