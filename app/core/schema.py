"""Payload schemas for event payloads and JSON request bodies: pydantic models.

    class Move(Payload):
        card: Annotated[str, StringConstraints(min_length=1, max_length=64)]
        column: int = 0

`validate(Move, payload)` returns the validated fields as a dict (a field that is
itself a model stays a model instance), or raises
app.core.errors.ValidationError (`invalid_payload`) whose `details` maps each field
to its problem. `Payload` is strict (JSON `true` is not an integer, `"1"` is not a
number) and refuses unknown fields, so a typo in a client is an error, not a
silently ignored option. The AsyncAPI document (app/api/asyncapi.py) takes each
event's JSON Schema from its model.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict

from app.core.errors import ValidationError

# A hostile payload with thousands of keys gets a bounded error report.
MAX_REPORTED_ERRORS = 20


class Payload(BaseModel):
    """Base class of every payload model: strict types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# Our wording for the usual problems (docs/events.md); others keep pydantic's message.
_TYPES = {"string_type": "string", "int_type": "integer", "bool_type": "boolean",
          "float_type": "number", "dict_type": "object", "list_type": "array",
          "model_type": "object", "int_from_float": "integer"}


def _problem(error: dict[str, Any]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not an accepted field"
    if kind in _TYPES:
        return f"must be of type {_TYPES[kind]}"
    if kind == "string_too_short":
        return ("must not be empty" if ctx["min_length"] == 1
                else f"must be at least {ctx['min_length']} characters")
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters"
    if kind == "string_pattern_mismatch":
        return "has characters or a form that is not allowed"
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be at least {ctx.get('ge', ctx.get('gt'))}"
    if kind in ("less_than_equal", "less_than"):
        return f"must be at most {ctx.get('le', ctx.get('lt'))}"
    message = error["msg"]
    return message[:1].lower() + message[1:]


@cache
def _accepts_no_payload(model: type[BaseModel]) -> bool:
    return not any(field.is_required() for field in model.model_fields.values())


def validate(model: type[BaseModel], payload: Any) -> dict[str, Any]:
    """The payload's fields, validated by `model` (a dict: handlers index it)."""
    if payload is None and _accepts_no_payload(model):
        payload = {}
    if not isinstance(payload, dict):
        raise ValidationError("payload must be a JSON object",
                              details={"expected": sorted(model.model_fields)})
    try:
        # The model's core validator, then its fields as a dict: this is on every
        # event's path, and costs about half of model_validate(...).model_dump().
        return model.__pydantic_validator__.validate_python(payload).__dict__.copy()
    except pydantic.ValidationError as exc:
        details: dict[str, str] = {}
        for error in exc.errors(include_url=False, include_input=False):
            if len(details) >= MAX_REPORTED_ERRORS:
                break
            location = error["loc"]
            name = ".".join(str(part) for part in location)[:64] if location else "payload"
            details.setdefault(name, _problem(error))
        raise ValidationError("payload does not match the schema", details=details) from None


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a payload model, as the AsyncAPI document shows it."""
    return model.model_json_schema()
