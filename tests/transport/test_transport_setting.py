"""ENGINEIO_TRANSPORT: each value picks its Engine.IO server, and both count a client's
backlog. (The version guard, which covers both: tests/adapters/test_versions.py.)"""

from __future__ import annotations

import engineio
import pytest
from engineio import packet
from engineio.socket import Socket

from app.transport import backlog, engine_server_class
from app.transport.engine import EngineServer
from config.settings import load_settings


def test_each_setting_value_picks_its_server_class():
    assert engine_server_class(load_settings(environ={}, env_file="")) is EngineServer
    stock = load_settings(environ={"ENGINEIO_TRANSPORT": "stock"}, env_file="")
    assert engine_server_class(stock) is engineio.Server


@pytest.mark.parametrize("server_class", [EngineServer, engineio.Server])
def test_the_backlog_counts_what_waits_for_a_client_under_either_transport(server_class):
    # the slow-consumer watchdog and the drain read it
    server = server_class(async_mode="threading")
    session = Socket(server, "sid")
    server.sockets["sid"] = session
    session = server.sockets["sid"]  # the template's server made it a Session
    assert backlog(session) == 0
    session.send(packet.Packet(packet.MESSAGE, data="waiting"))
    assert backlog(session) == 1
