"""/metrics of a real gunicorn with two workers: every scrape, whichever worker answers
it, reports the traffic of both; and LOG_FORMAT=json writes parseable lines."""

from __future__ import annotations

import json
import os
import signal

from tests.helpers import metric, scrape_metrics, wait_for

CLIENTS = 12
SENDERS = 3


class Stats:
    """/admin stats per worker pid, counting its calls (each is an /admin event)."""

    def __init__(self, admin) -> None:
        self.admin = admin
        self.calls = 0

    def __call__(self, complete: bool = True) -> dict[int, dict]:
        self.calls += 1
        stats = self.admin.call("stats", {}, namespace="/admin")
        if complete:
            assert stats["errors"] == []
        return {worker["pid"]: worker["connections"] for worker in stats["workers"]}

    def both_hold_clients(self) -> dict[int, dict] | None:
        workers = self()
        return len(workers) == 2 and all(c.get("/chat", 0) for c in workers.values()) and workers


def test_metrics_sum_the_traffic_of_both_workers(private_redis, start_own_server, connect,
                                                 refused, make_token):
    server = start_own_server(MESSAGE_QUEUE_URL=private_redis.url, WORKERS="2",
                              TRANSPORTS="websocket")
    clients = [connect(server.url, user=f"m{i}") for i in range(CLIENTS)]
    stats = Stats(connect(server.url, ["/admin"], user="root", role="admin"))
    wait_for(stats.both_hold_clients, message="both workers to hold /chat clients")

    # known traffic: ok events, refused events, refused connects
    for client in clients:
        assert client.call("join", {"room": "metrics"})["ok"]
    for sender in clients[:SENDERS]:
        assert sender.call("message", {"room": "metrics", "text": "hi"})["ok"]
    for client in clients[:4]:
        ack = client.call("message", {"room": "elsewhere", "text": "hi"})
        assert ack["error"]["code"] == "not_in_room"
    assert clients[0].call("no-such-event", {})["error"]["code"] == "unknown_event"
    for _ in range(2):
        refused(server.url, auth={"token": make_token(exp=1)})  # expired long ago
    refused(server.url, "/admin", auth={"token": make_token("bob")})  # user role: forbidden
    for client in clients:
        client.wait_event("message", SENDERS - (1 if client in clients[:SENDERS] else 0))

    expected = {
        ("realtime_events_total", "/chat", "join", "ok"): CLIENTS,
        ("realtime_events_total", "/chat", "message", "ok"): SENDERS,
        ("realtime_events_total", "/chat", "message", "not_in_room"): 4,
        ("realtime_events_total", "/chat", "unknown", "unknown_event"): 1,
        ("realtime_events_total", "/admin", "stats", "ok"): stats.calls,
        ("realtime_event_duration_seconds_count", "/chat", "join"): CLIENTS,
        ("realtime_event_duration_seconds_count", "/chat", "message"): SENDERS + 4,
        ("realtime_auth_refusals_total", "/chat", "token_expired"): 2,
        ("realtime_auth_refusals_total", "/admin", "forbidden"): 1,
        ("realtime_connections", "/chat"): CLIENTS,
        ("realtime_connections", "/admin"): 1,
        ("realtime_slow_consumer_disconnects_total",): 0,
    }
    # Each message reaches every other member of the room, whichever its worker, and
    # each join's `presence` event the members already there: at least this many. A
    # join acked on one worker can be handled on the other before that worker has
    # delivered the previous join's presence event (the ack waits for the publish, not
    # for every delivery), and then that event reaches the newcomer too: the exact
    # count is what the clients received (busy machine, +2 once).
    least = SENDERS * (CLIENTS - 1) + CLIENTS * (CLIENTS - 1) // 2
    received = sum(len([e for ns, e, _ in c.received if ns == "/chat"]) for c in clients)
    assert least <= received <= least + CLIENTS * (CLIENTS - 1) // 2, received
    expected[("realtime_deliveries_total",)] = received

    def observed(samples):
        found = {}
        for key in expected:
            name, *labels = key
            names = {"realtime_events_total": ("namespace", "event", "outcome"),
                     "realtime_event_duration_seconds_count": ("namespace", "event"),
                     "realtime_auth_refusals_total": ("namespace", "code"),
                     "realtime_connections": ("namespace",)}.get(name, ())
            found[key] = metric(samples, name, **dict(zip(names, labels, strict=True)))
        return found

    def assert_totals(message):
        try:
            wait_for(lambda: observed(scrape_metrics(server)) == expected, message=message)
        except AssertionError:
            assert observed(scrape_metrics(server)) == expected, message  # shows the difference

    # deliveries reach the shared files within a second (batched per worker); then
    # every scrape, answered by either worker, reports the same totals
    assert_totals("the expected totals")
    for _ in range(8):
        assert observed(scrape_metrics(server)) == expected

    # disconnects: the gauge follows (the deliveries of the leave events depend on how
    # the closes interleave: no longer counted exactly)
    del expected[("realtime_deliveries_total",)]
    for client in clients[:5]:
        client.close()
    expected[("realtime_connections", "/chat")] = CLIENTS - 5
    assert_totals("connections after closes")

    # a killed worker: gunicorn replaces it, its connections leave the gauge, its
    # counters stay in the totals
    workers = stats()
    victim, survivor = sorted(workers, key=lambda pid: workers[pid].get("/admin", 0))
    assert workers[survivor].get("/admin") == 1, workers  # keep the admin client
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in (answers := stats(complete=False)) and len(answers) == 2,
             message="gunicorn to replace the killed worker (and it to answer)")
    expected[("realtime_events_total", "/admin", "stats", "ok")] = stats.calls
    expected[("realtime_connections", "/chat")] = workers[survivor]["/chat"]
    assert_totals("totals after a kill")


def test_json_logs_carry_fields_and_no_token(start_own_server, connect, refused, make_token):
    server = start_own_server(LOG_FORMAT="json", LOG_LEVEL="DEBUG")
    token = make_token("alice")
    bad_token = make_token("mallory", exp=1)
    client = connect(server.url, user="alice", auth={"token": token})
    assert client.call("join", {"room": "logs"})["ok"]
    assert client.call("leave", {"room": "nowhere"})["error"]["code"] == "not_in_room"
    refused(server.url, auth={"token": bad_token})
    client.close()
    workers = server.worker_pids()

    def lines():
        return [line for line in server.log().splitlines() if line.strip()]

    wait_for(lambda: any('"disconnect' in line for line in lines()), message="the disconnect line")
    server.stop()
    records = [json.loads(line) for line in lines()]  # every line, gunicorn's too
    assert all({"time", "level", "logger", "message", "pid"} <= set(r) for r in records)
    events = [r for r in records if r.get("event") and r["logger"] == "app.sockets"]
    assert {"namespace": "/chat", "event": "join", "outcome": "ok", "user_id": "alice"}.items() \
        <= next(r for r in events if r["event"] == "join").items()
    assert next(r for r in events if r["event"] == "leave")["outcome"] == "not_in_room"
    assert all(r["pid"] in workers for r in events)
    refusal = next(r for r in records if r.get("outcome") == "token_expired")
    assert refusal["namespace"] == "/chat"
    text = server.log()
    assert token not in text and bad_token not in text
    assert token.split(".")[2] not in text  # not even a token's signature
