"""The payload schema used by events and request bodies."""

from __future__ import annotations

import re

import pytest

from app.core.errors import ValidationError
from app.core.schema import MAX_REPORTED_ERRORS, Field, Schema

SCHEMA = Schema(name=Field(str, min_length=1, max_length=5, pattern=re.compile("[a-z]+"), strip=True),
                count=Field(int, required=False, default=0),
                flag=Field(bool, required=False, default=False))


def test_valid_payload_gets_defaults_and_stripping():
    assert SCHEMA.validate({"name": " abc "}) == {"name": "abc", "count": 0, "flag": False}


@pytest.mark.parametrize("payload, field, fragment", [
    ({}, "name", "required"),
    ({"name": 1}, "name", "string"),
    ({"name": "abcdef"}, "name", "at most 5"),
    ({"name": "   "}, "name", "empty"),
    ({"name": "ABC"}, "name", "not allowed"),
    ({"name": "a", "count": True}, "count", "integer"),
    ({"name": "a", "count": 1.5}, "count", "integer"),
    ({"name": "a", "flag": 1}, "flag", "boolean"),
    ({"name": "a", "other": 1}, "other", "not an accepted field"),
])
def test_each_problem_is_named(payload, field, fragment):
    with pytest.raises(ValidationError) as raised:
        SCHEMA.validate(payload)
    assert fragment in raised.value.details[field]


@pytest.mark.parametrize("payload", [None, "x", 5, [1], b"bytes"])
def test_non_objects_are_refused(payload):
    with pytest.raises(ValidationError, match="JSON object"):
        SCHEMA.validate(payload)


def test_error_report_is_bounded():
    with pytest.raises(ValidationError) as raised:
        SCHEMA.validate({"name": "a", **{f"k{i}": i for i in range(10_000)}})
    assert len(raised.value.details) == MAX_REPORTED_ERRORS
