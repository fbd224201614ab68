"""The client types generated from the server's models (`make client-types`,
app/api/client_types.py): committed as generated, type-checked with tsc (the pinned
TypeScript of web/package.json), the demo page included, and a typed client that sends
what the server refuses does not compile."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from app.api.client_types import PYTHON, TYPESCRIPT, generated
from app.core.errors import ValidationError
from app.core.schema import validate
from app.sockets.chat import ChatNamespace
from tests.helpers import ROOT


def test_the_committed_types_are_what_the_models_generate():
    for path, text in generated().items():
        assert path.read_text() == text, f"{path.relative_to(ROOT)}: run `make client-types`"


def test_the_python_types_load_and_map_every_event():
    spec = importlib.util.spec_from_file_location("socket_events", PYTHON)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.CHAT_CLIENT_EVENTS["message"] is module.Message
    assert module.Message.__required_keys__ == {"room", "text"}
    assert set(module.CHAT_SERVER_EVENTS) >= {"message", "presence", "kicked"}


def tsc(web_modules: Path, files: list[Path] | None = None) -> subprocess.CompletedProcess:
    """tsc with web/tsconfig.json (or its options, on `files`), on web_modules' packages."""
    config = {"extends": str(ROOT / "web" / "tsconfig.json"),
              "compilerOptions": {"baseUrl": str(web_modules),
                                  "paths": {"socket.io-client": ["node_modules/socket.io-client"]}}}
    if files is not None:
        config["files"] = [str(path) for path in files]
    path = web_modules / f"tsconfig.{len(list(web_modules.glob('tsconfig.*')))}.json"
    path.write_text(json.dumps(config))
    return subprocess.run([str(web_modules / "node_modules" / ".bin" / "tsc"), "-p", str(path)],
                          capture_output=True, text=True, timeout=300)


def test_the_demo_page_type_checks_against_the_types(web_modules):
    result = tsc(web_modules)
    assert result.returncode == 0, result.stdout + result.stderr


CLIENT = """\
import type {{ ChatSocket }} from "{types}";
declare const socket: ChatSocket;
socket.emit("join", {{ room: "lobby", since: null }}, (ack) => {{
  if (!ack.ok) {{ const code: string = ack.error.code; }}
}});
socket.on("message", (message, offset) => {{ const text: string = message.text; }});
{send}
"""
# What a client may send (the server accepts it) and what it may not: (payload, the
# part of tsc's complaint that names the problem)
ACCEPTED = {"room": "lobby", "text": "hi", "client_id": "c1"}
REFUSED = [
    ({"room": "lobby"}, "Property 'text' is missing"),
    ({"room": "lobby", "text": 5}, "Type 'number' is not assignable to type 'string'"),
    ({"room": "lobby", "text": "hi", "colour": "red"}, "colour\"' does not exist in type 'Message'"),
    ({"room": "lobby", "text": "hi", "echo": "yes"}, "not assignable to type 'boolean'"),
]


def message_model(settings):
    """The model that validates /chat `message` (its text's length is a setting)."""
    return ChatNamespace._collect_events(settings)["message"].schema


def client(tmp_path: Path, name: str, send: str) -> Path:
    path = tmp_path / f"{name}.ts"
    path.write_text(CLIENT.format(types=TYPESCRIPT.with_suffix("").with_suffix(""), send=send))
    return path


def test_a_typed_client_compiles_when_it_sends_what_the_server_accepts(web_modules, tmp_path,
                                                                      settings):
    validate(message_model(settings), ACCEPTED)
    path = client(tmp_path, "accepted", f'socket.emit("message", {json.dumps(ACCEPTED)});')
    result = tsc(web_modules, [path])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("payload, complaint", REFUSED, ids=[c for _, c in REFUSED])
def test_a_typed_client_does_not_compile_when_it_sends_what_the_server_refuses(
        web_modules, tmp_path, settings, payload, complaint):
    with pytest.raises(ValidationError):  # the server refuses it
        validate(message_model(settings), payload)
    path = client(tmp_path, "refused", f'socket.emit("message", {json.dumps(payload)});')
    result = tsc(web_modules, [path])
    assert result.returncode != 0 and complaint in result.stdout, result.stdout + result.stderr


def test_a_typed_client_does_not_compile_with_an_event_the_server_does_not_have(
        web_modules, tmp_path):
    path = client(tmp_path, "unknown", 'socket.emit("mesage", {room: "lobby", text: "hi"});')
    result = tsc(web_modules, [path])
    assert result.returncode != 0 and '"mesage"' in result.stdout, result.stdout
