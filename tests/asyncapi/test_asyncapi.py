"""GET /api/asyncapi.json: valid AsyncAPI 3.0 (the official JSON Schema, from the npm
package @asyncapi/specs pinned in this folder), and true to the namespaces."""

from __future__ import annotations

import re

import jsonschema
import pytest
import requests

from app.core.errors import ValidationError
from app.core.schema import validate
from app.sockets import NAMESPACES
from app.sockets.events import COMMON_ERRORS, COMMON_SERVER_EVENTS, CONNECT_ERRORS
from tests.asyncapi.schema import check_document, official_schema
from tests.helpers import ROOT


@pytest.fixture(scope="session")
def asyncapi_schema():
    return official_schema()


@pytest.fixture()
def document(http):
    response = http.get("/api/asyncapi.json", base_url="https://chat.example.com")
    assert response.status_code == 200
    return response.get_json()


def test_the_document_is_valid_asyncapi_3(document, asyncapi_schema):
    assert document["asyncapi"] == "3.0.0"
    check_document(document, asyncapi_schema)
    assert document["servers"]["app"] == {
        "host": "chat.example.com", "protocol": "wss", "pathname": "/socket.io/",
        "security": [{"$ref": "#/components/securitySchemes/jwt"}]}


def test_the_schema_check_catches_a_broken_document(document, asyncapi_schema):
    # A check that cannot fail proves nothing: break the document the ways a bug would.
    document["operations"]["chat.join"]["action"] = "emit"
    document["components"]["messages"]["chat.message"]["payload"] = {"type": 5}
    with pytest.raises(AssertionError) as raised:
        check_document(document, asyncapi_schema)
    assert "operations/chat.join" in str(raised.value)
    assert "components/messages/chat.message" in str(raised.value)


def resolve(document: dict, node: dict) -> dict:
    """Follows $refs (within the document) to the object."""
    while "$ref" in node:
        target = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_every_event_of_every_namespace_is_described(document, settings):
    for namespace in NAMESPACES:
        channel = document["channels"][namespace.path.strip("/")]
        assert channel["address"] == namespace.path
        events = namespace._collect_events(settings)
        for name, spec in events.items():
            message = resolve(document, channel["messages"][name])
            assert message["name"] == name
            assert message["payload"] == spec.schema.model_json_schema()
            operation = document["operations"][f"{namespace.path.strip('/')}.{name}"]
            assert operation["action"] == "receive"
            assert resolve(document, operation["reply"]["messages"][0])["name"] == "ack"
        sent = {resolve(document, channel["messages"][key])["name"]
                for key in channel["messages"] if key.startswith("server.")}
        assert sent == set(COMMON_SERVER_EVENTS) | set(namespace.server_events)
    chat = document["channels"]["chat"]["messages"]
    assert {"message", "announcement", "kicked", "shutdown", "token_expiring",
            "session_ended"} <= {resolve(document, chat[k])["name"] for k in chat}


def test_the_payload_schemas_agree_with_the_server(document, settings):
    """What the document's JSON Schema accepts, the server accepts, and the reverse."""
    (chat,) = [ns for ns in NAMESPACES if ns.path == "/chat"]
    model = chat._collect_events(settings)["message"].schema
    schema = document["components"]["messages"]["chat.message"]["payload"]
    for payload in [{"room": "lobby", "text": "hi"}, {"room": "lobby", "text": "hi", "echo": True},
                    {"room": "bad room", "text": "hi"}, {"room": "lobby"},
                    {"room": "lobby", "text": "hi", "extra": 1}, {"room": "lobby", "text": 5},
                    {"room": "lobby", "text": "x" * (settings.max_message_length + 1)}]:
        documented = jsonschema.Draft202012Validator(schema).is_valid(payload)
        try:
            validate(model, payload)
            accepted = True
        except ValidationError:
            accepted = False
        assert documented == accepted, payload


def test_every_error_code_the_sockets_raise_is_documented(document):
    acks = document["components"]["messages"]["chat.ack"]["payload"]["oneOf"][1]
    ack_codes = {c["const"] for c in acks["properties"]["error"]["properties"]["code"]["oneOf"]}
    assert set(COMMON_ERRORS) <= ack_codes
    refusal = document["components"]["messages"]["chat.connect_error"]["payload"]
    connect_codes = {c["const"] for c in refusal["properties"]["data"]["properties"]["code"]["oneOf"]}
    assert connect_codes == set(CONNECT_ERRORS)
    raised = set()
    for path in (ROOT / "app" / "sockets").glob("*.py"):
        raised |= set(re.findall(r'code="([a-z_]+)"', path.read_text()))
    assert raised <= ack_codes | connect_codes, raised - ack_codes - connect_codes


def test_a_live_server_serves_it(live_server, asyncapi_schema):
    document = requests.get(live_server.url + "/api/asyncapi.json", timeout=10).json()
    check_document(document, asyncapi_schema)
    assert document["servers"]["app"]["host"] == live_server.url.removeprefix("http://")
