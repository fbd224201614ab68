"""Small, strict payload schemas for event payloads and JSON request bodies.

Deliberately tiny (no extra dependency): a payload is a JSON object whose fields
have a type, optional bounds and an optional pattern. Unknown fields are refused,
so a typo in a client is an error, not a silently ignored option.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app.core.errors import ValidationError

_MISSING = object()
# A hostile payload with thousands of keys gets a bounded error report.
MAX_REPORTED_ERRORS = 20


@dataclass(frozen=True)
class Field:
    type: type
    required: bool = True
    default: Any = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: re.Pattern[str] | None = None
    strip: bool = False
    minimum: float | None = None  # numbers
    maximum: float | None = None

    def check(self, value: Any) -> tuple[Any, str | None]:
        # bool is an int in Python; JSON true is never a valid number here.
        if not isinstance(value, self.type) or (self.type is not bool and isinstance(value, bool)):
            return value, f"must be of type {_json_type(self.type)}"
        if isinstance(value, str):
            if self.strip:
                value = value.strip()
            if self.min_length is not None and len(value) < self.min_length:
                return value, ("must not be empty" if self.min_length == 1
                               else f"must be at least {self.min_length} characters")
            if self.max_length is not None and len(value) > self.max_length:
                return value, f"must be at most {self.max_length} characters"
            if self.pattern is not None and not self.pattern.fullmatch(value):
                return value, "has characters or a form that is not allowed"
        elif isinstance(value, int | float):
            if self.minimum is not None and value < self.minimum:
                return value, f"must be at least {self.minimum}"
            if self.maximum is not None and value > self.maximum:
                return value, f"must be at most {self.maximum}"
        return value, None


def _json_type(kind: type) -> str:
    return {str: "string", int: "integer", float: "number", bool: "boolean",
            dict: "object", list: "array"}.get(kind, kind.__name__)


class Schema:
    """`Schema(room=Field(str, max_length=64))`; `validate(payload)` returns a new dict."""

    def __init__(self, **fields: Field) -> None:
        self.fields = fields

    def validate(self, payload: Any) -> dict[str, Any]:
        if payload is None and not any(f.required for f in self.fields.values()):
            payload = {}
        if not isinstance(payload, dict):
            raise ValidationError("payload must be a JSON object",
                                  details={"expected": sorted(self.fields)})
        errors: dict[str, str] = {}
        result: dict[str, Any] = {}
        for name, spec in self.fields.items():
            value = payload.get(name, _MISSING)
            if value is _MISSING:
                if spec.required:
                    errors[name] = "is required"
                else:
                    result[name] = spec.default
                continue
            value, problem = spec.check(value)
            if problem:
                errors[name] = problem
            else:
                result[name] = value
        for name in payload:
            if name not in self.fields and len(errors) < MAX_REPORTED_ERRORS:
                errors[str(name)[:64]] = "is not an accepted field"
        if errors:
            raise ValidationError("payload does not match the schema", details=errors)
        return result
