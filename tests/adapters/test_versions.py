"""The start-up guard: the app, and gunicorn, start only on library releases the
adapters (app/adapters) were tested with, under either transport, and say what to do."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from app.adapters.versions import HOW_TO_TEST, TESTED, TESTED_GUNICORN, libraries
from config.settings import SettingsError, load_settings
from tests.helpers import ASYNC_MODE, ROOT, process_environment, refuse_in_process_tier

SOCKETIO, ENGINEIO = TESTED["python-socketio"][-1], TESTED["python-engineio"][-1]


def installed_as(directory: Path, name: str, version: str) -> str:
    """A directory that, first on the path, makes `name` look installed at `version`
    (importlib.metadata reads the first distribution it finds)."""
    dist_info = directory / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return str(directory)


@pytest.mark.parametrize("transport", ["template", "stock"])
def test_an_untested_python_engineio_stops_the_server_at_start_under_either_transport(
        tmp_path, start_own_server, transport):
    path = installed_as(tmp_path, "python-engineio", "4.99.0")
    with pytest.raises(RuntimeError, match="server exited") as refused:
        start_own_server(PYTHONPATH=path, ENGINEIO_TRANSPORT=transport)
    output = str(refused.value)
    assert (f"python-engineio 4.99.0 is not a release the template was tested with "
            f"(python-engineio {ENGINEIO}): pin python-engineio=={ENGINEIO}, {HOW_TO_TEST}"
            ) in output.splitlines()  # the line itself, ending the traceback
    assert "Worker failed to boot" in output and "AttributeError" not in output


@pytest.mark.parametrize("installed, refusal", [
    ({"python-socketio": "5.99.0"},
     f"python-socketio 5.99.0 is not a release the template was tested with "
     f"(python-socketio {SOCKETIO}): pin python-socketio=={SOCKETIO}, {HOW_TO_TEST}"),
    ({"python-engineio": "4.99.0", "python-socketio": "6.0.0"},
     f"python-socketio 6.0.0 and python-engineio 4.99.0 are not releases the template was "
     f"tested with (python-socketio {SOCKETIO}, python-engineio {ENGINEIO}): "
     f"pin python-socketio=={SOCKETIO} python-engineio=={ENGINEIO}, {HOW_TO_TEST}"),
    ({ASYNC_MODE: "99.0.0"},
     f"{ASYNC_MODE} 99.0.0 is not a release the template was tested with "
     f"({ASYNC_MODE} {TESTED[ASYNC_MODE][-1]}): pin {ASYNC_MODE}=={TESTED[ASYNC_MODE][-1]}, "
     f"{HOW_TO_TEST}"),
])
@pytest.mark.parametrize("transport", ["template", "stock"])
def test_the_refusal_names_each_untested_library(monkeypatch, installed, refusal, transport):
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: installed.get(name) or real_version(name))
    settings = load_settings(environ={"ENGINEIO_TRANSPORT": transport, "ASYNC_MODE": ASYNC_MODE},
                             env_file="")
    with pytest.raises(SettingsError, match=f"^{re.escape(refusal)}$"):
        create_app(settings)


def test_only_the_async_mode_in_use_is_checked(monkeypatch):
    other = "gevent" if ASYNC_MODE == "eventlet" else "eventlet"
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "99.0.0" if name == other else real_version(name))
    assert other not in libraries(ASYNC_MODE)
    create_app(load_settings(environ={"ASYNC_MODE": ASYNC_MODE}, env_file=""))


def pins(*files: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in files:  # the later file wins, as `make` installs them
        found.update(re.findall(r"^([\w-]+)==(\S+)$", (ROOT / name).read_text(), re.M))
    return found


def test_the_tested_releases_are_the_pinned_ones():
    default, gevent = pins("requirements.txt"), pins("requirements.txt", "requirements-gevent.txt")
    for name, releases in TESTED.items():
        assert default[name] in releases, f"requirements.txt pins {name}=={default[name]}: " \
                                          "add it to app/adapters/versions.py once tested"
        assert gevent[name] in releases
    assert default["gunicorn"] in TESTED_GUNICORN["eventlet"]
    assert gevent["gunicorn"] in TESTED_GUNICORN["gevent"]


@pytest.mark.servers
@pytest.mark.parametrize("mode", ["eventlet", "gevent"])
def test_gunicorn_serves_a_worker_class_only_on_a_release_it_was_tested_with(mode, tmp_path):
    """gunicorn 26.0 removed the eventlet worker: eventlet on it is refused at start with
    what to do (each async mode's pass runs in its own profile: eventlet's gunicorn 25.x,
    gevent's the newest), and a release nobody tested is refused too."""
    refuse_in_process_tier("gunicorn")

    def check_config(**env):
        return subprocess.run(
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "--check-config"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env=process_environment(ASYNC_MODE=mode, **env))

    version = importlib.metadata.version("gunicorn")
    checked = check_config()
    if mode == "eventlet" and int(version.split(".")[0]) >= 26:
        assert checked.returncode == 1, checked
        assert "gunicorn 26.0 removed the eventlet worker" in checked.stderr
        assert "Traceback" not in checked.stderr
    else:
        assert version in TESTED_GUNICORN[mode], f"gunicorn {version} untested for {mode}"
        assert checked.returncode == 0, checked.stderr

    untested = check_config(PYTHONPATH=installed_as(tmp_path, "gunicorn", "25.99.0"))
    assert untested.returncode == 1, untested
    assert (f"gunicorn 25.99.0 is not a release the template was tested with for "
            f"ASYNC_MODE={mode}") in untested.stderr
    assert HOW_TO_TEST in untested.stderr and "Traceback" not in untested.stderr
