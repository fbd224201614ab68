"""Each socket's token is looked at when it falls due (app/sockets/base.py): one look
booked per socket, whatever its refreshes, and none left for a socket that is gone."""

from __future__ import annotations

import time

from app.core.lifecycle import Deadlines
from app.core.tokens import Identity
from app.sockets.base import TOKEN_LOOK_MAX


def _chat(app, connected=True):
    services = app.extensions["realtime"]
    chat = services.sio.namespace_handlers["/chat"]
    # a heap whose calls the test makes (no background task)
    services.sio.deadlines = Deadlines(lambda run: None, lambda seconds: None)
    services.sio.manager.is_connected = lambda sid, namespace: connected
    ended: list[tuple[str, str]] = []
    chat.end_socket = lambda sid, code, message: (ended.append((sid, code)),
                                                  chat._forget(sid))
    return chat, services.sio.deadlines, ended


def test_refreshes_keep_one_look_booked_per_socket(app):
    chat, deadlines, ended = _chat(app)
    identity = Identity("alice", "alice", "user", int(time.time()) + 3600, "jti-1")
    chat.identities["sid"] = identity
    chat._watch_token("sid", 0.0)
    for n in range(50):  # a client sending `refresh` in a loop
        chat.identities["sid"] = identity.refreshed(
            Identity("alice", "alice", "user", int(time.time()) + 3600 + n, f"jti-{n}"))
        chat._watch_token("sid")
    assert len(deadlines) == 1

    assert deadlines.run_due(time.monotonic()) == 1  # the connect's look: nothing due
    assert ended == [] and len(deadlines) == 1  # booked again, a minute ahead at most
    assert chat.looks["sid"] <= time.monotonic() + TOKEN_LOOK_MAX


def test_an_expired_token_ends_its_socket_and_a_gone_socket_keeps_no_look(app):
    chat, deadlines, ended = _chat(app)
    chat.identities["old"] = Identity("bob", "bob", "user", int(time.time()) - 1)
    chat.identities["gone"] = Identity("carol", "carol", "user", int(time.time()) + 3600)
    chat._watch_token("old", 0.0)
    chat._watch_token("gone", 0.0)
    chat._forget("gone")

    deadlines.run_due(time.monotonic())
    assert ended == [("old", "token_expired")]
    assert len(deadlines) == 0 and chat.looks == {}


def test_a_socket_still_connecting_is_looked_at_again_shortly(app):
    chat, deadlines, ended = _chat(app, connected=False)
    chat.identities["sid"] = Identity("dave", "dave", "user", int(time.time()) - 1)
    chat._watch_token("sid", 0.0)

    deadlines.run_due(time.monotonic())
    assert ended == []  # a disconnect would do nothing yet
    assert chat.looks["sid"] - time.monotonic() < 1.0


def test_a_ban_found_by_the_look_tells_the_socket_why_before_ending_it(app):
    """The look can find a ban before the kick reaches the socket (the kick yields
    between sockets; another worker's ban arrives over the control bus): the socket is
    told `kicked` with the ban's reason, as the kick would, then disconnected."""
    chat, deadlines, ended = _chat(app)
    said: list = []
    chat.emit = lambda event, data, to=None, **kwargs: said.append(("emit", event, data, to))
    chat.server.disconnect = lambda sid, namespace=None, **kwargs: said.append(("disconnect", sid))
    chat.identities["sid"] = Identity("erin", "erin", "user", int(time.time()) + 3600)
    until = int(time.time()) + 60
    # as another worker's ban arrives here: no kick on this worker
    chat.services.revocations.remember({"user_id": "erin", "until": until, "reason": "spam"})
    chat._watch_token("sid", 0.0)

    deadlines.run_due(time.monotonic())
    assert said == [("emit", "kicked", {"reason": "spam", "until": until}, "sid"),
                    ("disconnect", "sid")]
    assert ended == []  # not `session_ended`


def test_a_ban_sent_with_a_kick_keeps_its_reason_on_every_worker(app):
    """Each worker installs the ban before kicking its sockets: a look that runs while
    the kick yields finds it, and must say why as the kick does (a busy run's failure:
    `kicked` {reason: ""} from a worker that had the ban without its reason)."""
    services = app.extensions["realtime"]
    until = int(time.time()) + 60
    services.sio.manager.control.run("kick", {"user_id": "frank", "reason": "spam",
                                              "until": until})
    assert services.revocations.kick_notice("frank") == {"reason": "spam", "until": until}
