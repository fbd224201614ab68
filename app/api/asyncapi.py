"""GET /api/asyncapi.json: an AsyncAPI 3.0 document generated from the namespaces.

Everything comes from the registered namespaces (app/sockets NAMESPACES): one channel
per namespace (its path), one `receive` operation per `@on_event` (payload: the JSON
Schema of its pydantic model; reply: the ack), one `send` operation per server event
(`server_events`, plus the ones every namespace sends), the ack and connect error
codes, and the JWT as the security scheme. A namespace added to NAMESPACES is in it
with no extra work; tests/asyncapi checks it against the official AsyncAPI schema.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from flask import Blueprint, current_app, request
from pydantic import BaseModel

from app.api.requests import current_identity
from app.services import get_services
from app.sockets import NAMESPACES
from app.sockets.base import BaseNamespace
from app.sockets.events import COMMON_ERRORS, COMMON_SERVER_EVENTS, CONNECT_ERRORS
from config.settings import Settings

bp = Blueprint("asyncapi", __name__)

ASYNCAPI_VERSION = "3.0.0"
SCHEMAS = "#/components/schemas/"


class _Document:
    """Collects the document's parts; nested models become components.schemas."""

    def __init__(self) -> None:
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self.schemas: dict[str, Any] = {}

    def schema_of(self, model: type[BaseModel] | None) -> dict[str, Any]:
        if model is None:
            return {"description": "any JSON value (the event has no payload schema)"}
        schema = model.model_json_schema(ref_template=SCHEMAS + "{model}")
        self.schemas.update(schema.pop("$defs", {}))
        return schema

    def message(self, key: str, event: str, title: str, payload: dict[str, Any],
                summary: str | None = None) -> dict[str, str]:
        message = {"name": event, "title": title, "payload": payload}
        if summary:
            message["summary"] = summary
        self.messages[key] = message
        return {"$ref": f"#/components/messages/{key}"}


def _key(name: str) -> str:
    """A component key (AsyncAPI allows letters, digits, `.`, `-`, `_`)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _merged(cls: type, attribute: str) -> dict[str, Any]:
    """A dict class attribute merged along the class hierarchy (subclasses win)."""
    merged: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass).get(attribute, {}))
    return merged


def _doc(function: Any) -> str | None:
    text = inspect.getdoc(function)
    return text.strip() if text else None


def _ack_schema(codes: dict[str, str]) -> dict[str, Any]:
    return {"oneOf": [
        {"type": "object", "title": "success", "required": ["ok"],
         "properties": {"ok": {"const": True}},
         "description": "the handler's result is in the other fields"},
        {"type": "object", "title": "failure", "required": ["ok", "error"],
         "additionalProperties": False, "properties": {
             "ok": {"const": False},
             "error": {"type": "object", "required": ["code", "message"],
                       "additionalProperties": False, "properties": {
                           "code": {"oneOf": [{"const": code, "description": when}
                                              for code, when in sorted(codes.items())]},
                           "message": {"type": "string"},
                           "details": {"type": "object",
                                       "description": "for invalid_payload: {field: problem}"}}}}},
    ]}


def _connect_error_schema() -> dict[str, Any]:
    return {"type": "object", "required": ["message", "data"], "properties": {
        "message": {"type": "string"},
        "data": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"oneOf": [{"const": code, "description": when}
                               for code, when in sorted(CONNECT_ERRORS.items())]},
            "message": {"type": "string"}, "details": {"type": "object"}}}}}


def _add_namespace(doc: _Document, namespace: type[BaseNamespace], settings: Settings) -> None:
    channel = _key(namespace.path.strip("/") or "root")
    ref = {"$ref": f"#/channels/{channel}"}
    messages: dict[str, Any] = {}
    role = namespace.required_role
    codes = {**COMMON_ERRORS, **_merged(namespace, "error_codes")}
    ack = doc.message(f"{channel}.ack", "ack", f"{namespace.path} ack", _ack_schema(codes),
                      'every event\'s ack: {"ok": true, ...result} or {"ok": false, error}')
    messages["ack"] = ack
    for event, spec in sorted(namespace._collect_events(settings).items()):
        name = _key(event)
        key = f"{channel}.{name}"
        messages[name] = doc.message(key, event, f"{namespace.path} {event}",
                                     doc.schema_of(spec.schema), _doc(spec.handler))
        doc.operations[key] = {
            "action": "receive", "channel": ref, "title": f"{event} (client -> server)",
            "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"}],
            "reply": {"channel": ref,
                      "messages": [{"$ref": f"#/channels/{channel}/messages/ack"}]}}
        if _doc(spec.handler):
            doc.operations[key]["description"] = _doc(spec.handler)
    server_events = {**COMMON_SERVER_EVENTS, **_merged(namespace, "server_events")}
    for event, model in sorted(server_events.items()):
        name = _key(event)
        key = f"{channel}.server.{name}"
        messages[f"server.{name}"] = doc.message(key, event, f"{namespace.path} {event}",
                                                 doc.schema_of(model), _doc(model))
        doc.operations[key] = {
            "action": "send", "channel": ref, "title": f"{event} (server -> client)",
            "messages": [{"$ref": f"#/channels/{channel}/messages/server.{name}"}]}
    messages["connect_error"] = doc.message(
        f"{channel}.connect_error", "connect_error", f"{namespace.path} connect refused",
        _connect_error_schema(), "a refused connection (socket.io's connect_error)")
    doc.operations[f"{channel}.server.connect_error"] = {
        "action": "send", "channel": ref, "title": "connect_error (server -> client)",
        "messages": [{"$ref": f"#/channels/{channel}/messages/connect_error"}]}
    who = f"tokens with the {role!r} role" if role else "any valid token"
    doc.channels[channel] = {
        "address": namespace.path, "title": f"Socket.IO namespace {namespace.path}",
        "description": (_doc(namespace) or "") + f"\n\nAccepts {who}.",
        "messages": messages}


def build_document(settings: Settings, namespaces=NAMESPACES) -> dict[str, Any]:
    """The document without `servers` (they depend on the request's host)."""
    doc = _Document()
    for namespace in namespaces:
        _add_namespace(doc, namespace, settings)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {"title": "Socket.IO API", "version": "1.0.0", "description": (
            "Socket.IO v5 (Engine.IO v4) at /socket.io/; every channel is a namespace, and "
            "each message's `name` is the Socket.IO event name. A client event is emitted "
            "with one JSON object and an ack callback. Generated from the server's "
            "namespaces (app/api/asyncapi.py); the REST API is in docs/events.md.")},
        "defaultContentType": "application/json",
        "channels": doc.channels,
        "operations": doc.operations,
        "components": {
            "schemas": doc.schemas,
            "messages": doc.messages,
            "securitySchemes": {"jwt": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": 'The access token from POST /api/auth/token, in the connect '
                               'auth payload {"token": "<jwt>"} (or, outside browsers, an '
                               'Authorization: Bearer header).'}},
        },
    }


@bp.get("/asyncapi.json")
def asyncapi():
    if get_services().settings.asyncapi_access == "admin":
        current_identity("admin")  # 401 without a token, 403 for a non-admin
    document = current_app.extensions.get("asyncapi")
    if document is None:  # built once per worker: the namespaces do not change
        document = current_app.extensions["asyncapi"] = build_document(get_services().settings)
    server = {"host": request.host, "protocol": "wss" if request.is_secure else "ws",
              "pathname": "/socket.io/",
              "security": [{"$ref": "#/components/securitySchemes/jwt"}]}
    return {**document, "servers": {"app": server}}
