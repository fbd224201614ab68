"""Connection-state recovery with the official socket.io-client (Node), unchanged:
`socket.recovered`, the same id, the rooms back without a join, the missed messages
once and in order, then the live ones."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import uuid

import pytest

from tests.helpers import NODE_MODULES, ROOT, WAIT


class Probe:
    def __init__(self, url: str, token: str, room: str) -> None:
        self.process = subprocess.Popen(
            ["node", str(ROOT / "tests" / "recovery" / "probe.js"), url, token, room],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "NODE_PATH": str(NODE_MODULES)})
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def next(self, key: str) -> dict:
        """The next report that has `key`; the others on the way are returned too."""
        seen = []
        while True:
            try:
                item = self.lines.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"no {key!r} report within {WAIT}s; seen: {seen}") from None
            seen.append(item)
            if key in item:
                return item, seen

    def tell(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture()
def probe(node_modules, make_token):
    probes = []

    def start(url: str, room: str, user: str = "probe") -> Probe:
        probes.append(Probe(url, make_token(user), room))
        return probes[-1]

    yield start
    for p in probes:
        p.close()


@pytest.fixture()
def room():
    return f"r-{uuid.uuid4().hex[:12]}"


def send(client, room, text):
    ack = client.call("message", {"room": room, "text": text})
    assert ack["ok"], ack
    return ack["message"]


@pytest.mark.parametrize("queue_kind", ["memory", "redis"])
def test_a_cut_client_is_recovered_with_what_it_missed(queue_kind, server, cluster, connect,
                                                       probe, room):
    url = server.url if queue_kind == "memory" else cluster[0].url
    sender_url = server.url if queue_kind == "memory" else cluster[1].url
    sender = connect(sender_url, user="sender")
    sender.call("join", {"room": room})
    client = probe(url, room)
    first, _ = client.next("connect")
    assert first["recovered"] is False
    client.next("joined")
    before = send(sender, room, "before")
    got, _ = client.next("text")
    assert got["text"] == "before" and got["offset"] == before["stream_id"]

    client.tell("cut")
    client.next("disconnect")
    missed = [send(sender, room, f"missed {n}") for n in range(3)]
    client.tell("back")
    again, reports = client.next("connect")
    assert again == {"connect": first["connect"], "recovered": True}
    after = send(sender, room, "after")
    texts = []
    while len(texts) < 4:
        item, _ = client.next("text")
        texts.append(item)
    assert [t["text"] for t in texts] == [m["text"] for m in missed] + ["after"]
    assert [t["stream_id"] for t in texts] == [m["stream_id"] for m in missed] + [after["stream_id"]]
    assert all(t["offset"] == t["stream_id"] for t in texts)
    assert not any("joined" in r for r in reports)  # back in its room without a join
