"""Every event of every namespace, fed arbitrary payloads by hypothesis.

The server must answer each with a well-formed ack (never `internal_error`, never
silence), stay up, and keep serving a second pair of clients.
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.sockets import NAMESPACES

EXAMPLES = 150
KNOWN_ERRORS = {"invalid_payload", "unknown_event", "not_in_room", "rate_limited"}

leaf = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
        | st.binary(max_size=40))
junk = st.recursive(leaf, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=16)
huge = st.integers(0, 60_000).map(lambda n: "x" * n)
# Payloads shaped like the real ones, with junk in the fields, reach deeper code.
shaped = st.fixed_dictionaries({}, optional={
    "room": junk | st.sampled_from(["lobby", "fuzz", "a" * 64, "a" * 65, "bad room", ""]),
    "text": junk | huge | st.sampled_from(["hi", " ", ""]),
    "echo": junk, "user_id": junk | st.text(max_size=200), "reason": junk | huge})
payload = junk | huge | shaped
arguments = st.lists(payload, max_size=3)


def events_of(path: str) -> list[str]:
    (namespace,) = [ns for ns in NAMESPACES if ns.path == path]
    return sorted(spec.__socket_event__[0] for spec in vars(namespace).values()
                  if hasattr(spec, "__socket_event__"))


@pytest.fixture(scope="module")
def fuzz_server(start_server):
    # A rate limit high enough to let the fuzzer reach the handlers.
    return start_server(EVENT_RATE="100000", EVENT_BURST="100000")


def well_formed(ack) -> bool:
    if not isinstance(ack, dict) or not isinstance(ack.get("ok"), bool):
        return False
    if ack["ok"]:
        return True
    error = ack.get("error")
    return (isinstance(error, dict) and isinstance(error.get("message"), str)
            and error.get("code") in KNOWN_ERRORS)


@pytest.mark.parametrize("path, role", [("/chat", "user"), ("/admin", "admin")])
def test_arbitrary_payloads_get_well_formed_acks(fuzz_server, connect, path, role):
    fuzzer = connect(fuzz_server.url, [path], user=f"fuzz-{uuid.uuid4().hex}", role=role)
    alice = connect(fuzz_server.url, user=f"a-{uuid.uuid4().hex}")
    bob = connect(fuzz_server.url, user=f"b-{uuid.uuid4().hex}")
    for client in (alice, bob):
        client.call("join", {"room": "bystanders"})
    names = events_of(path)
    tried = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(event=st.sampled_from(names) | st.text(max_size=30), args=arguments)
    def check(event, args):
        data = args[0] if len(args) == 1 else tuple(args) if args else None
        ack = fuzzer.call(event, data, namespace=path, timeout=10)
        tried.append(event)
        assert well_formed(ack), (event, args, ack)

    check()

    assert fuzzer.sio.connected and len(tried) >= EXAMPLES
    sent = alice.call("message", {"room": "bystanders", "text": "still fine"})["message"]
    assert bob.wait_event("message")[-1] == sent
    assert "Traceback" not in fuzz_server.log()
