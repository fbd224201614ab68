"""ENGINEIO_TRANSPORT: the template's transport refuses library versions it was not
tested with; python-engineio's own (stock) starts on them and serves."""

from __future__ import annotations

import re
from pathlib import Path

import engineio
import pytest
from engineio import packet
from engineio.socket import Socket

from app import create_app
from app.transport import TESTED_VERSIONS, backlog, engine_server_class
from app.transport.engine import EngineServer
from config.settings import SettingsError, load_settings
from tests.helpers import ROOT, STOCK

ENGINEIO, SOCKETIO = (TESTED_VERSIONS[name][-1] for name in ("python-engineio", "python-socketio"))
REFUSAL = (f"python-engineio 4.99.0 is not a version the template's transport was tested "
           f"with ({ENGINEIO}); set ENGINEIO_TRANSPORT=stock or pin python-engineio=={ENGINEIO}")


def installed_as(directory: Path, name: str, version: str) -> str:
    """A directory that, first on the path, makes `name` look installed at `version`
    (importlib.metadata reads the first distribution it finds)."""
    dist_info = directory / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return str(directory)


@pytest.mark.skipif(STOCK, reason="sets ENGINEIO_TRANSPORT itself: run in the template pass")
def test_an_untested_python_engineio_is_refused_at_start_and_stock_serves_on_it(
        tmp_path, start_own_server, connect):
    path = installed_as(tmp_path, "python-engineio", "4.99.0")
    with pytest.raises(RuntimeError, match="server exited") as refused:
        start_own_server(PYTHONPATH=path)  # ENGINEIO_TRANSPORT=template
    output = str(refused.value)
    assert REFUSAL in output.splitlines()  # the line itself, ending the traceback
    assert "Worker failed to boot" in output and "AttributeError" not in output

    server = start_own_server(PYTHONPATH=path, ENGINEIO_TRANSPORT="stock")
    client = connect(server.url, user="on-stock")
    assert client.call("join", {"room": "stock"})["ok"] is True


@pytest.mark.parametrize("installed, refusal", [
    ({"python-socketio": "5.99.0"},
     f"python-socketio 5.99.0 is not a version the template's transport was tested with "
     f"({SOCKETIO}); set ENGINEIO_TRANSPORT=stock or pin python-socketio=={SOCKETIO}"),
    ({"python-engineio": "4.99.0", "python-socketio": "6.0.0"},
     f"python-engineio 4.99.0 and python-socketio 6.0.0 are not versions the template's "
     f"transport was tested with (python-engineio {ENGINEIO}, python-socketio {SOCKETIO}); "
     f"set ENGINEIO_TRANSPORT=stock or pin python-engineio=={ENGINEIO} "
     f"python-socketio=={SOCKETIO}"),
])
def test_the_refusal_names_each_untested_library_and_stock_mode_skips_the_check(
        monkeypatch, installed, refusal):
    from importlib import metadata

    real_version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: installed.get(name) or real_version(name))
    settings = load_settings(environ={}, env_file="")
    with pytest.raises(SettingsError, match=f"^{re.escape(refusal)}$"):
        create_app(settings)
    stock = load_settings(environ={"ENGINEIO_TRANSPORT": "stock"}, env_file="")
    assert type(create_app(stock).extensions["realtime"].sio.eio) is engineio.Server


def test_the_tested_versions_are_the_pinned_ones():
    pins = dict(re.findall(r"^([\w-]+)==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M))
    for name, versions in TESTED_VERSIONS.items():
        assert pins[name] in versions, f"requirements.txt pins {name}=={pins[name]}: " \
                                       f"add it to app/transport TESTED_VERSIONS once tested"


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
