"""One contract per hook of app/adapters: what the template relies on in each library,
checked against the installed release. A release that renames a private method,
changes its signature, stops calling it, or moves an attribute fails here, naming the
hook, before anything else does.

(These tests read the libraries' private names: that is their job. The check that the
template does so nowhere else is test_private_names.py.)"""

from __future__ import annotations

import _socket
import importlib.metadata
import importlib.util
import inspect
import re
import socket
from pathlib import Path

import engineio
import pytest
import socketio
from engineio.socket import Socket

from app.adapters import engineio_hooks, eventlet_hooks, gevent_hooks, gunicorn_hooks, redis_hooks
from app.adapters.hooks import Hooked
from app.adapters.socketio_hooks import RedisManagerHooks, ServerHooks
from app.transport.websocket import raw_socket
from tests.helpers import ASYNC_MODE, wait_for


def source(package: str) -> str:
    """Every module of an installed library, as one text."""
    root = Path(importlib.util.find_spec(package).origin).parent
    return "\n".join(path.read_text() for path in sorted(root.rglob("*.py")))


# {adapter class: (library class, {private name: the signature relied on})}
OVERRIDES = {
    ServerHooks: (socketio.Server, {
        "_engineio_server_class": "(self)",
        "_handle_eio_connect": "(self, eio_sid, environ)",
        "_handle_eio_message": "(self, eio_sid, data)",
        "_handle_eio_disconnect": "(self, eio_sid, reason)",
        "_handle_connect": "(self, eio_sid, namespace, data)",
        "_handle_disconnect": "(self, eio_sid, namespace, reason=None)",
        "_handle_event": "(self, eio_sid, namespace, id, data)",
        "_handle_event_internal": "(self, server, sid, eio_sid, data, namespace, id)",
        "_send_packet": "(self, eio_sid, pkt)",
        "_send_eio_packet": "(self, eio_sid, eio_pkt)",
    }),
    RedisManagerHooks: (socketio.RedisManager, {
        "_redis_connect": "(self)",
        "_publish": "(self, data)",
        "_handle_emit": "(self, message)",
        "_redis_listen_with_retries": "(self)",
        "_listen": "(self)",
    }),
    engineio_hooks.ServerHooks: (engineio.Server, {
        "_service_task": "(self)",
        "_ok": "(self, packets=None, headers=None, jsonp_index=None)",
        "_get_socket": "(self, sid)",
    }),
    engineio_hooks.SocketHooks: (Socket, {
        "_upgrade_websocket": "(self, environ, start_response)",
        "_websocket_handler": "(self, ws)",
    }),
}
# {adapter class: {public alias: (private name, signature)}}: library steps the
# template calls
ALIASES = {
    ServerHooks: {"trigger_handler": ("_trigger_event", "(self, event, namespace, *args)")},
    engineio_hooks.ServerHooks: {
        "trigger_handler": ("_trigger_event", "(self, event, *args, **kwargs)"),
        "cors_allowed_origins_for": ("_cors_allowed_origins", "(self, environ)"),
        "cors_headers": ("_cors_headers", "(self, environ)"),
    },
}
HOOKS = [(adapter, library, private, signature)
         for adapter, (library, hooks) in OVERRIDES.items()
         for private, signature in hooks.items()]
# how the library reaches a step it does not call by name
CALLED_AS = {"_upgrade_websocket": r"getattr\(self, '_upgrade_' \+ transport\)"}
LIBRARY = {socketio.Server: "socketio", socketio.RedisManager: "socketio",
           engineio.Server: "engineio", Socket: "engineio"}


def test_every_hook_of_the_adapters_has_a_contract_here():
    assert {adapter: set(adapter.HOOKS) for adapter in OVERRIDES} == \
        {adapter: set(hooks) for adapter, (_, hooks) in OVERRIDES.items()}


@pytest.mark.parametrize("adapter, library, private, signature", HOOKS,
                         ids=[f"{library.__name__}.{private}" for _, library, private, _ in HOOKS])
def test_an_overridden_step_exists_with_its_signature_and_the_library_still_takes_it(
        adapter, library, private, signature):
    step = getattr(library, private, None)
    assert callable(step), f"{library.__name__}.{private} is gone"
    assert str(inspect.signature(step)) == signature
    # called (or handed to a task) by the library itself, not only defined: an override
    # of a step nobody takes would silently do nothing
    called_as = CALLED_AS.get(private, rf"\.{private}\b(?!\s*=)")
    uses = re.findall(called_as, source(LIBRARY[library]))
    assert uses, f"python-{LIBRARY[library]} no longer uses {private}"
    public = adapter.HOOKS[private]
    assert not hasattr(library, public), f"{library.__name__} now has {public} of its own"
    assert not re.search(rf"\bself\.{public}\s*=", source(LIBRARY[library])), public


@pytest.mark.parametrize("adapter", list(OVERRIDES))
def test_an_override_of_the_public_name_is_what_the_library_calls(adapter):
    for private, public in adapter.HOOKS.items():
        library = OVERRIDES[adapter][0]
        assert adapter.__dict__[public] is getattr(library, private)  # by default: the library's

        def override(self, *args, **kwargs):
            return ("overridden", args)

        subclass = type("Sub", (adapter,), {public: override})
        assert subclass.__dict__[private] is override  # no call in between
        deeper = type("Deeper", (subclass,), {})
        assert deeper.__dict__.get(private, override) is override


@pytest.mark.parametrize("adapter, public, private, signature",
                         [(a, p, *spec) for a, aliases in ALIASES.items()
                          for p, spec in aliases.items()])
def test_a_called_step_exists_with_its_signature(adapter, public, private, signature):
    library = OVERRIDES[adapter][0]
    assert str(inspect.signature(getattr(library, private))) == signature
    assert getattr(adapter, public) is getattr(library, private)


def test_hooked_applies_the_table_to_every_subclass():
    class Base:
        def _step(self):
            return "library"

    class Adapter(Hooked, Base):
        HOOKS = {"_step": "step"}

    class Mine(Adapter):
        def step(self):
            return "mine, after " + super().step()

    assert Mine()._step() == "mine, after library"
    assert Adapter()._step() == "library"


# --- python-socketio and python-engineio: attributes ------------------------------

def test_a_partial_binary_packet_is_kept_by_client_where_forget_partial_packet_drops_it():
    server = ServerHooks(async_mode="threading")
    assert server._binary_packet == {}
    assert re.search(r"self\._binary_packet\[eio_sid\] = pkt", source("socketio"))
    server._binary_packet["sid"] = object()
    server.forget_partial_packet("sid")
    server.forget_partial_packet("gone")  # no error for a client without one
    assert server._binary_packet == {}


def test_the_websocket_server_class_is_what_sessions_serve_websockets_with():
    server = engineio.Server(async_mode="threading")
    library_class = server._async["websocket"]
    engineio_hooks.wrap_websocket_server(server, lambda cls: ("wrapped", cls))
    assert server._async["websocket"] == ("wrapped", library_class)
    assert "self.server._async['websocket'](" in inspect.getsource(Socket._upgrade_websocket) \
        or "self.server._async['websocket'](" in inspect.getsource(Socket)


# --- gunicorn ---------------------------------------------------------------------

def library_file(module: str) -> str:
    """A library module's source, read without importing it (gunicorn's worker modules
    import their async library: the other one's, in this process, would break it)."""
    return Path(importlib.util.find_spec(module.split(".")[0]).origin).parent.joinpath(
        *module.split(".")[1:]).with_suffix(".py").read_text()


def test_gunicorn_workers_keep_the_attributes_the_worker_hooks_use():
    base = library_file("gunicorn.workers.base")
    assert "def handle_exit(self, sig, frame):" in base
    assert "self.wsgi = self.app.wsgi()" in base
    # the async workers read `self.handle` when they start serving (after post_worker_init)
    assert "partial(self.handle, " in library_file("gunicorn.workers.ggevent")
    if int(importlib.metadata.version("gunicorn").split(".")[0]) < 26:
        assert "partial(self.handle, " in library_file("gunicorn.workers.geventlet")


def test_gunicorn_puts_the_client_socket_in_the_environ():
    assert '"gunicorn.socket": sock' in library_file("gunicorn.http.wsgi")
    assert gunicorn_hooks.connection_socket({"gunicorn.socket": "sock"}) == "sock"
    assert gunicorn_hooks.connection_socket({}) is None


def test_the_gunicorn_hooks_reach_a_worker_object():
    class Worker:  # what the hooks are given: gunicorn's, with the attributes checked above
        wsgi = "app"

        def handle_exit(self, sig, frame):
            return "exit"

        def handle(self, listener, client, addr):
            return "handled"

    worker = Worker()
    assert gunicorn_hooks.loaded_app(worker) == "app"
    assert gunicorn_hooks.loaded_app(object()) is None
    assert gunicorn_hooks.stop_accepting(worker)(15, None) == "exit"
    gunicorn_hooks.wrap_connection_handler(worker, lambda handle: lambda *a: ("wrapped", handle(*a)))
    assert worker.handle(None, None, None) == ("wrapped", "handled")


# --- eventlet and gevent ------------------------------------------------------------

# Each async library's own, in its own pass (one library's sockets and hub in the
# other's patched process would break it).
eventlet_pass = pytest.mark.skipif(ASYNC_MODE != "eventlet", reason="eventlet's pass")
gevent_pass = pytest.mark.skipif(ASYNC_MODE != "gevent", reason="gevent's pass")


@eventlet_pass
def test_eventlet_thread_pool_size_is_set_through_its_globals():
    from eventlet import tpool

    assert isinstance(tpool._nthreads, int) and isinstance(tpool._setup_already, bool)
    if not tpool._setup_already:
        eventlet_hooks.set_thread_pool_size(3)
        assert tpool._nthreads == 3


def test_engineio_reads_the_websocket_socket_from_eventlet_input():
    driver = Path(importlib.util.find_spec("engineio.async_drivers.eventlet").origin).read_text()
    assert "environ['eventlet.input'].get_socket()" in driver
    environ: dict = {}
    eventlet_hooks.provide_websocket_socket(environ, "sock")
    assert environ["eventlet.input"].get_socket() == "sock"


@eventlet_pass
def test_the_os_socket_is_found_under_an_eventlet_green_socket():
    from eventlet.green import socket as green_socket

    green = green_socket.socket()
    try:
        green.setblocking(False)
        assert isinstance(eventlet_hooks.os_socket(green), _socket.socket)
        assert raw_socket(green) is eventlet_hooks.os_socket(green)
    finally:
        green.close()


@gevent_pass
def test_the_os_socket_is_found_under_a_gevent_socket():
    import gevent.socket

    green = gevent.socket.socket()
    try:
        assert isinstance(gevent_hooks.os_socket(green), _socket.socket)
        assert raw_socket(green) is gevent_hooks.os_socket(green)
    finally:
        green.close()


def a_taken_over_socket_keeps_its_descriptor(take_over, green_socket) -> None:
    """take_over(green): a new green socket on the same descriptor number (what the
    event loop knows of it stays right), which the old one's close leaves open, and
    whose OS socket the transport can write to directly."""
    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    green = green_socket(fileno=accepted.detach())
    fileno = green.fileno()
    taken = take_over(green)
    try:
        assert taken.fileno() == fileno
        green.close()  # gunicorn's, at the request's end
        assert raw_socket(taken) is not None
        taken.sendall(b"still open")
        assert peer.recv(100) == b"still open"
    finally:
        taken.close()
        peer.close()
        listener.close()


@eventlet_pass
def test_eventlet_takes_over_a_sockets_descriptor():
    from eventlet.green import socket as green_socket

    a_taken_over_socket_keeps_its_descriptor(eventlet_hooks.take_over, green_socket.socket)


@gevent_pass
def test_gevent_takes_over_a_sockets_descriptor():
    import gevent.socket

    a_taken_over_socket_keeps_its_descriptor(gevent_hooks.take_over, gevent.socket.socket)


def readable_watch_runs_once_in_a_green_thread(on_readable, sleep, current, hub) -> None:
    """`on_readable(fd, fn)`: fn runs once the socket is readable, in a new green thread
    (not the event loop's: it may wait), once per watch, and leaves no garbage for the
    cyclic GC (the listener and its callback must not point at each other)."""
    import gc

    ours, theirs = socket.socketpair()
    try:
        ran = []
        on_readable(ours.fileno(), lambda: ran.append(current()))
        for _ in range(5):
            sleep(0.01)
        assert ran == []  # nothing to read yet
        theirs.send(b"x")
        wait_for(lambda: ran, message="the watch's function", sleep=sleep)
        assert len(ran) == 1 and ran[0] is not hub()
        for _ in range(5):
            sleep(0.01)
        assert len(ran) == 1  # once: still readable, but not watched any more
        gc.collect()
        gc.disable()
        try:
            for _ in range(100):
                done = []
                on_readable(ours.fileno(), lambda done=done: done.append(True))
                while not done:
                    sleep(0)
            assert gc.collect() < 100  # a cycle per watch would be 300 or more objects
        finally:
            gc.enable()
    finally:
        ours.close()
        theirs.close()


@eventlet_pass
def test_eventlet_runs_a_green_thread_when_a_socket_is_readable():
    import eventlet
    import greenlet
    from eventlet.hubs import get_hub

    readable_watch_runs_once_in_a_green_thread(
        eventlet_hooks.on_readable, eventlet.sleep, greenlet.getcurrent,
        lambda: get_hub().greenlet)


@gevent_pass
def test_gevent_runs_a_green_thread_when_a_socket_is_readable():
    import gevent
    import greenlet

    readable_watch_runs_once_in_a_green_thread(
        gevent_hooks.on_readable, gevent.sleep, greenlet.getcurrent, gevent.get_hub)


def readable_watches_reuse_green_threads_with_fresh_contexts(on_readable, sleep, current) -> None:
    """The green thread a watch ran its function in runs the next one (parked between
    them, not started anew), each function in a fresh context, and one that raises
    leaves the next ones running."""
    import contextvars

    probe = contextvars.ContextVar("probe", default=None)
    ours, theirs = socket.socketpair()
    seen = []

    def run(fail=False):
        ours.recv(1)
        seen.append((current(), probe.get()))
        probe.set("left behind")
        if fail:
            raise RuntimeError("a function that fails (expected in this test)")

    def watch(function) -> None:
        count = len(seen)
        theirs.send(b"x")
        on_readable(ours.fileno(), function)
        wait_for(lambda: len(seen) > count, message="the watch's function", sleep=sleep)
        sleep(0)  # (it parks after its function)

    try:
        watch(run)
        watch(run)
        watch(lambda: run(fail=True))
        watch(run)
        assert len(seen) == 4
        assert seen[1][0] is seen[0][0] and seen[2][0] is seen[0][0]  # reused
        assert seen[3][0] is not seen[0][0]  # the one that raised ended
        assert [value for _, value in seen] == [None] * 4  # a fresh context each time
    finally:
        ours.close()
        theirs.close()


@eventlet_pass
def test_eventlet_readable_watches_reuse_green_threads():
    import eventlet
    import greenlet

    readable_watches_reuse_green_threads_with_fresh_contexts(
        eventlet_hooks.on_readable, eventlet.sleep, greenlet.getcurrent)


@gevent_pass
def test_gevent_readable_watches_reuse_green_threads():
    import gevent
    import greenlet

    readable_watches_reuse_green_threads_with_fresh_contexts(
        gevent_hooks.on_readable, gevent.sleep, greenlet.getcurrent)


def parked_green_threads_lose_no_function(hooks, sleep, current) -> None:
    """Only Runners.start wakes a parked green thread: one woken by anything else parks
    again or ends, one that ends after start chose it leaves its function to a new
    one, and at most `keep` stay parked."""
    from app.adapters.hooks import Runners

    runners = Runners(2, hooks._spawn, hooks._call_soon, hooks._park)
    ran = []

    def run(pause=0.0):
        if pause:
            sleep(pause)
        ran.append(current())

    def settle(count):
        wait_for(lambda: len(ran) >= count, message=f"{count} functions run", sleep=sleep)
        sleep(0.01)  # (it parks after its function)
        assert len(ran) == count

    runners.start(run)
    settle(1)
    parked = ran[0]
    assert runners.idle == [parked]
    hooks._call_soon(parked.switch, "a stray switch")
    sleep(0.01)
    runners.start(run)
    settle(2)
    assert ran[1] is parked  # parked again by the stray switch, then reused
    hooks._call_soon(parked.throw, RuntimeError("a stray throw (expected in this test)"))
    sleep(0.01)
    assert parked.dead and runners.idle == []
    runners.start(run)
    settle(3)
    chosen = ran[2]
    assert chosen is not parked and runners.idle == [chosen]
    hooks._call_soon(chosen.throw, RuntimeError("a throw after start chose it (expected)"))
    runners.start(run)  # takes `chosen`: its wake runs after the throw
    settle(4)
    assert chosen.dead and ran[3] is not chosen
    for _ in range(4):
        runners.start(lambda: run(0.02))
    settle(8)
    assert len(runners.idle) == 2 and len(set(ran[4:])) == 4


@eventlet_pass
def test_eventlet_parked_green_threads_lose_no_function():
    import eventlet
    import greenlet

    parked_green_threads_lose_no_function(eventlet_hooks, eventlet.sleep, greenlet.getcurrent)


@gevent_pass
def test_gevent_parked_green_threads_lose_no_function():
    import gevent
    import greenlet

    parked_green_threads_lose_no_function(gevent_hooks, gevent.sleep, greenlet.getcurrent)


def test_the_pending_sids_are_sets_however_the_list_is_stored():
    from app.adapters.socketio_hooks import _PendingSids, _SidSet

    pending = _PendingSids()
    pending["/a"] = []  # (python-socketio's way)
    pending.setdefault("/b", []).append("x")  # (LoggedDelivery.pre_connect's)
    pending["/a"].append("y")
    pending["/a"].append("y")
    assert all(isinstance(sids, _SidSet) for sids in pending.values())
    assert list(pending["/a"]) == ["y"] and "x" in pending["/b"]
    pending["/a"].remove("y")
    assert not pending["/a"]


def test_the_room_index_leaves_a_manager_as_the_librarys_own_disconnect_does():
    """RoomIndex replaces python-socketio's walk over every room on a disconnect (and in
    get_rooms) with each socket's own rooms, and repeats the rest of the library's
    `basic_disconnect` (callbacks, pending lists): after every operation of a random
    run, both managers must hold the same state, and give the same rooms."""
    import random
    from types import SimpleNamespace

    from app.adapters.socketio_hooks import RoomIndex, _SidSet

    class Indexed(RoomIndex, socketio.Manager):
        pass

    managers = (socketio.Manager(), Indexed())
    for manager in managers:
        ids = iter(range(10**6))
        manager.server = SimpleNamespace(eio=SimpleNamespace(
            generate_id=lambda ids=ids: f"sid{next(ids)}"))
    rng = random.Random(7)
    namespaces, rooms = ("/chat", "/admin"), ("a", "b", "c")
    eio_sids = iter(range(10**6))
    sids: list[tuple[str, str]] = []  # (namespace, sid) connected, in both

    def state(manager):
        # the pending sids of sockets still there (the library's lists keep a sid
        # pre-disconnected twice after its disconnect; the index's sets do not)
        there = {(namespace, sid) for namespace, members in manager.rooms.items()
                 for sid in members.get(None, {})}
        return (manager.rooms, {sid: {k: v for k, v in calls.items() if k != 0}
                                for sid, calls in manager.callbacks.items()},
                *({(namespace, sid) for namespace, sids in pending.items() for sid in sids
                   if (namespace, sid) in there}
                  for pending in (manager.pending_connect, manager.pending_disconnect)))

    for _ in range(3000):
        op = rng.random()
        if op < 0.25 or not sids:
            namespace, eio_sid = rng.choice(namespaces), f"e{next(eio_sids)}"
            made = {m.pre_connect(eio_sid, namespace) for m in managers}
            assert len(made) == 1
            sid = made.pop()
            if rng.random() < 0.8:
                for m in managers:
                    m.connect(sid, namespace)
            sids.append((namespace, sid))
        else:
            namespace, sid = rng.choice(sids)
            room = rng.choice(rooms)
            if op < 0.5:
                for m in managers:
                    m.enter_room(sid, namespace, room)
            elif op < 0.6:
                for m in managers:
                    m.leave_room(sid, namespace, room)
            elif op < 0.65:
                for m in managers:
                    m.close_room(room, namespace)
            elif op < 0.75:
                for m in managers:
                    m._generate_ack_id(sid, print)
            elif op < 0.8:
                for m in managers:
                    m.pre_disconnect(sid, namespace)
            else:
                for m in managers:
                    m.disconnect(sid, namespace)
                sids.remove((namespace, sid))
        library, indexed = managers
        assert state(library) == state(indexed)
        for namespace, sid in sids[-5:]:
            assert sorted(library.get_rooms(sid, namespace)) == \
                sorted(indexed.get_rooms(sid, namespace))
        assert [sid for namespace, sid in sids if not library.is_connected(sid, namespace)] \
            == [sid for namespace, sid in sids if not indexed.is_connected(sid, namespace)]
        # the index's pending sets hold sockets that are there, and no set is empty
        there = {(namespace, sid) for namespace, members in indexed.rooms.items()
                 for sid in members.get(None, {})}
        for pending in (indexed.pending_connect, indexed.pending_disconnect):
            for namespace, pending_sids in pending.items():
                assert pending_sids and all((namespace, sid) in there for sid in pending_sids)
                assert isinstance(pending_sids, _SidSet)
    # what was left is exactly what the index holds (no empty entry left behind)
    assert set(managers[1].rooms_of) == {
        (namespace, sid) for namespace, members in managers[1].rooms.items()
        for room in members.values() for sid in room}


# --- redis-py -----------------------------------------------------------------------

def test_a_refused_connection_is_known_to_have_sent_nothing():
    import redis

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = redis.Redis(port=port, socket_connect_timeout=1, retry=redis_hooks.NotingRetry(
        redis.backoff.NoBackoff(), 1))
    redis_hooks.start_noting()
    with pytest.raises(redis.ConnectionError) as refused:
        client.ping()
    assert redis_hooks.nothing_sent(refused.value)
    assert not redis_hooks.maybe_sent()


def test_a_cluster_connection_that_found_no_master_sent_nothing_and_asks_again():
    import redis

    from app.adapters.redis_cluster import SlotOwner, cluster_client

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    owner = SlotOwner([("127.0.0.1", port)], 0)
    client = cluster_client(owner, socket_connect_timeout=1,
                            retry=redis_hooks.NotingRetry(redis.backoff.NoBackoff(), 1))
    redis_hooks.start_noting()
    with pytest.raises(redis.ConnectionError) as unknown:
        client.ping()
    assert redis_hooks.nothing_sent(unknown.value) and not redis_hooks.maybe_sent()
    owner._address = ("127.0.0.1", port)  # known, and gone: forgotten at the refusal
    with pytest.raises(redis.ConnectionError) as refused:
        client.ping()
    assert redis_hooks.nothing_sent(refused.value) and owner.known is None


def test_a_cluster_lookup_trusts_healthy_masters_and_a_late_error_keeps_a_new_master():
    from app.adapters.redis_cluster import SlotOwner, _healthy_masters

    nodes = "\n".join([
        "a1 127.0.0.1:7000@17000,node-a myself,master - 0 0 3 connected 0-5460",
        "b2 127.0.0.1:7001@17001 master,nofailover - 0 0 4 connected 5461-10922",
        "c3 127.0.0.1:7002@17002 master,fail - 0 0 2 disconnected 10923-16383",
        "d4 127.0.0.1:7003@17003 master,fail? - 0 0 5 connected",
        "e5 :0@0 master,noaddr - 0 0 6 disconnected",
        "f6 127.0.0.1:7004@17004 slave a1 0 0 3 connected"])
    assert dict(_healthy_masters(nodes)) == {"a1": 3, "b2": 4}
    owner = SlotOwner([("127.0.0.1", 7000)], 0)
    owner._address = ("127.0.0.1", 7001)  # a lookup found the new master
    owner.moved(("127.0.0.1", 7000))  # a late error from a connection to the old one
    assert owner.known == ("127.0.0.1", 7001)
    owner.moved(("127.0.0.1", 7001))
    assert owner.known is None


def test_a_cluster_master_that_does_not_answer_is_asked_for_again():
    import redis

    from app.adapters.redis_cluster import SlotOwner, cluster_client

    with socket.socket() as frozen:  # accepts (the kernel does), never answers
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(8)
        address = frozen.getsockname()
        owner = SlotOwner([address], 0)
        owner._address = address
        client = cluster_client(owner, socket_timeout=0.2, retry=redis.retry.Retry(
                                    redis.backoff.NoBackoff(), 0))
        with pytest.raises(redis.TimeoutError):
            client.ping()
        assert owner.known is None  # the next connect asks the cluster again


def test_an_exhausted_pool_is_known_to_have_sent_nothing():
    import redis

    pool = redis.ConnectionPool(max_connections=1)
    pool._created_connections = 1  # (as if its one connection were out)
    with pytest.raises(redis.ConnectionError) as exhausted:
        pool.get_connection()
    assert redis_hooks.nothing_sent(exhausted.value)
    blocking = redis.BlockingConnectionPool(max_connections=1, timeout=0.01)
    blocking.pool.get_nowait()
    with pytest.raises(redis.ConnectionError) as waited:
        blocking.get_connection()
    assert redis_hooks.nothing_sent(waited.value)


def test_a_failure_after_a_write_is_noted_by_the_retry():
    import redis

    retry = redis_hooks.NotingRetry(redis.backoff.NoBackoff(), 1)
    calls = []

    def do():
        calls.append(1)
        raise redis.ConnectionError("Connection closed by server.")

    redis_hooks.start_noting()
    with pytest.raises(redis.ConnectionError):
        retry.call_with_retry(do, lambda error, *count: None)
    assert len(calls) == 2 and redis_hooks.maybe_sent()


def test_a_jwt_codec_with_a_prepared_key_signs_and_verifies_as_pyjwt_does():
    """app/adapters/jwt_hooks.py: PyJWT's own codec takes the registered algorithm (its
    `_jws`), and the prepared key changes nothing but the cost."""
    import jwt

    from app.adapters import jwt_hooks

    secret, claims = "s" * 40, {"sub": "alice"}
    codec = jwt_hooks.hmac_codec("HS384", secret)
    assert isinstance(codec._jws.get_algorithm_by_name("HS384"), jwt_hooks._PreparedKey)
    token = codec.encode(claims, secret, algorithm="HS384")
    assert token == jwt.encode(claims, secret, algorithm="HS384")
    assert codec.decode(token, secret, algorithms=["HS384"]) == claims
    with pytest.raises(jwt.InvalidSignatureError):
        codec.decode(token, "t" * 40, algorithms=["HS384"])
    with pytest.raises(jwt.InvalidSignatureError):  # signed with another secret
        codec.decode(jwt.encode(claims, "t" * 40, algorithm="HS384"), secret,
                     algorithms=["HS384"])
    with pytest.raises(jwt.InvalidAlgorithmError):
        codec.decode(jwt.encode(claims, secret, algorithm="HS256"), secret,
                     algorithms=["HS384"])
    assert jwt.decode(token, secret, algorithms=["HS384"]) == claims  # PyJWT's own: as before
    with pytest.raises(jwt.InvalidAlgorithmError):
        codec.decode(jwt.encode(claims, None, algorithm="none"), secret, algorithms=["HS384"])
    with pytest.raises(jwt.InvalidKeyError):  # a key PyJWT refuses is refused at once
        jwt_hooks.hmac_codec("HS256", "")


def test_a_jwt_codec_prepares_its_key_once(monkeypatch):
    import jwt
    from jwt.algorithms import HMACAlgorithm

    from app.adapters import jwt_hooks

    prepared = []
    standard = HMACAlgorithm.prepare_key
    monkeypatch.setattr(HMACAlgorithm, "prepare_key",
                        lambda self, key: prepared.append(key) or standard(self, key))
    secret = "s" * 40
    codec = jwt_hooks.hmac_codec("HS256", secret)
    assert prepared == [secret]
    for _ in range(3):
        codec.decode(codec.encode({"sub": "a"}, secret, algorithm="HS256"), secret,
                     algorithms=["HS256"])
    assert prepared == [secret]
    jwt.decode(jwt.encode({"sub": "a"}, secret, algorithm="HS256"), secret,
               algorithms=["HS256"])
    assert len(prepared) == 3  # PyJWT's own prepares it every time (why the codec)
