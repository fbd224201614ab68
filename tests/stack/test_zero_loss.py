"""Zero loss: 1000 clients on two workers, a burst of 52,000 room deliveries via Redis.

Senders fire their messages without waiting for acks, so hundreds of handlers publish
at once on each worker: more than the Redis pool's connections, the situation in
which python-socketio's stock manager logged "Cannot publish to redis" and dropped
messages. Every message must arrive exactly once at every member of its room.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict

import socketio

CLIENTS = 1000
ROOMS = 10
SENDERS_PER_ROOM = 13
MESSAGES_PER_SENDER = 4   # 10 rooms x 13 senders x 4 = 520 messages x 100 members
BURST_TIMEOUT = 120
MARKER = "end-of-burst"


async def run_burst(url: str, tokens: list[str], admin_token: str) -> dict:
    received: list[Counter] = [Counter() for _ in tokens]
    markers = [0] * len(tokens)
    clients = [socketio.AsyncClient(reconnection=False) for _ in tokens]

    def record(i: int, data: dict) -> None:
        if data["text"] == MARKER:
            markers[i] += 1
        else:
            received[i].update([data["id"]])

    for i, client in enumerate(clients):
        client.on("message", lambda data, i=i: record(i, data), namespace="/chat")

    async def join(i: int) -> None:
        # python-socketio's client: no recovery offsets (they would be `i` below)
        await clients[i].connect(url, namespaces=["/chat"],
                                 auth={"token": tokens[i], "recovery": False},
                                 transports=["websocket"], wait_timeout=30)
        ack = await clients[i].call("join", {"room": f"burst-{i % ROOMS}"}, namespace="/chat",
                                    timeout=30)
        assert ack["ok"], ack

    for start in range(0, len(clients), 100):  # connect in waves of 100
        await asyncio.gather(*(join(i) for i in range(start, min(start + 100, len(clients)))))
    admin = socketio.AsyncClient(reconnection=False)
    await admin.connect(url, namespaces=["/admin"], auth={"token": admin_token},
                        transports=["websocket"], wait_timeout=30)
    stats = await admin.call("stats", {}, namespace="/admin", timeout=30)
    await admin.disconnect()

    senders = [i for i in range(len(clients)) if i // ROOMS < SENDERS_PER_ROOM]
    acks: list[dict] = []
    started = time.monotonic()

    async def send(i: int, n: int) -> None:
        acks.append(await clients[i].call(
            "message", {"room": f"burst-{i % ROOMS}", "text": f"{i}/{n}", "echo": True},
            namespace="/chat", timeout=BURST_TIMEOUT))

    await asyncio.gather(*(send(i, n) for i in senders for n in range(MESSAGES_PER_SENDER)))
    sent: dict[str, set[str]] = defaultdict(set)
    for ack in acks:
        if ack.get("ok"):
            sent[ack["message"]["room"]].add(ack["message"]["id"])
    expected = sum(len(sent[f"burst-{i % ROOMS}"]) for i in range(len(clients)))
    deadline = time.monotonic() + BURST_TIMEOUT
    while sum(sum(c.values()) for c in received) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    # A barrier instead of a pause: one marker per room, sent after every ack came
    # back, so after any publish of the burst (retries included); a member that has
    # its marker has everything the burst will ever deliver to it.
    await asyncio.gather(*(clients[room].call(
        "message", {"room": f"burst-{room}", "text": MARKER, "echo": True}, namespace="/chat",
        timeout=BURST_TIMEOUT) for room in range(ROOMS)))
    while min(markers) < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert min(markers) == 1 and max(markers) == 1, "a room's marker was lost or duplicated"
    await asyncio.gather(*(client.disconnect() for client in clients))
    return {"acks": acks, "sent": sent, "received": received, "expected": expected,
            "elapsed": elapsed, "per_worker": [w["connections"]["/chat"] for w in stats["workers"]]}


def test_a_burst_through_redis_arrives_exactly_once(private_redis, start_own_server, tokens):
    # PING_INTERVAL: python-engineio's client ends its own connection when it has sent
    # nothing for pingInterval + 5 s; its 1000 clients in this one process, starved on a
    # saturated machine, read their PINGs (behind the burst) later than that.
    server = start_own_server(MESSAGE_QUEUE_URL=private_redis.url, WORKERS="2",
                              TRANSPORTS="websocket", LOG_LEVEL="WARNING", PING_INTERVAL="60",
                              MAX_CONNECTIONS_PER_ADDRESS=str(2 * CLIENTS))
    user_tokens = [tokens.issue(f"load{i}", f"load{i}", "user") for i in range(CLIENTS)]

    result = asyncio.run(run_burst(server.url, user_tokens, tokens.issue("root", "root", "admin")))

    # both workers held clients, so most deliveries crossed Redis
    assert len(result["per_worker"]) == 2 and min(result["per_worker"]) > 0, result["per_worker"]
    failed = [ack for ack in result["acks"] if not ack.get("ok")]
    assert failed == [], f"{len(failed)} messages reported as not delivered: {failed[:3]}"
    messages = sum(len(ids) for ids in result["sent"].values())
    assert messages == ROOMS * SENDERS_PER_ROOM * MESSAGES_PER_SENDER
    lost = duplicated = 0
    for i, counts in enumerate(result["received"]):
        expected = result["sent"][f"burst-{i % ROOMS}"]
        lost += len(expected - set(counts))
        duplicated += sum(n - 1 for n in counts.values() if n > 1)
        assert set(counts) <= expected, "a client received another room's message"
    deliveries = sum(sum(c.values()) for c in result["received"])
    print(f"\nzero-loss: {CLIENTS} clients (per worker {result['per_worker']}), {messages} "
          f"messages, {deliveries} deliveries (expected {result['expected']}), lost {lost}, "
          f"duplicated {duplicated}, {result['elapsed']:.1f}s")
    assert result["expected"] >= 50_000
    assert (lost, duplicated) == (0, 0)
    assert deliveries == result["expected"]
    log = server.log()
    assert "Cannot publish to redis" not in log and "publish to the message queue failed" not in log
