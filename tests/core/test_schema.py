"""Payload models (pydantic) as events and request bodies use them: app.core.schema."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import Field, StringConstraints

from app.core.errors import ValidationError
from app.core.schema import MAX_REPORTED_ERRORS, Payload, validate


class Sample(Payload):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5,
                                           pattern="^[a-z]+$")]
    count: Annotated[int, Field(ge=0, le=10)] = 0
    flag: bool = False


class AllOptional(Payload):
    flag: bool = False


def test_valid_payload_gets_defaults_and_stripping():
    assert validate(Sample, {"name": " abc "}) == {"name": "abc", "count": 0, "flag": False}


@pytest.mark.parametrize("payload, field, problem", [
    ({}, "name", "is required"),
    ({"name": 1}, "name", "must be of type string"),
    ({"name": b"abc"}, "name", "must be of type string"),
    ({"name": "abcdef"}, "name", "must be at most 5 characters"),
    ({"name": "   "}, "name", "must not be empty"),
    ({"name": "ABC"}, "name", "has characters or a form that is not allowed"),
    ({"name": "a\n"}, "name", None),  # stripped first: valid
    ({"name": "a b"}, "name", "has characters or a form that is not allowed"),
    ({"name": "a", "count": True}, "count", "must be of type integer"),  # JSON true is no int
    ({"name": "a", "count": 1.5}, "count", "must be of type integer"),
    ({"name": "a", "count": "1"}, "count", "must be of type integer"),
    ({"name": "a", "count": -1}, "count", "must be at least 0"),
    ({"name": "a", "count": 11}, "count", "must be at most 10"),
    ({"name": "a", "flag": 1}, "flag", "must be of type boolean"),
    ({"name": "a", "other": 1}, "other", "is not an accepted field"),
])
def test_each_problem_is_named(payload, field, problem):
    if problem is None:
        validate(Sample, payload)
        return
    with pytest.raises(ValidationError) as raised:
        validate(Sample, payload)
    assert raised.value.code == "invalid_payload"
    assert raised.value.details[field] == problem


def test_every_problem_is_reported_at_once():
    with pytest.raises(ValidationError) as raised:
        validate(Sample, {"name": "", "count": True, "extra": None})
    assert set(raised.value.details) == {"name", "count", "extra"}


@pytest.mark.parametrize("payload", [None, "x", 5, [1], b"bytes"])
def test_non_objects_are_refused(payload):
    with pytest.raises(ValidationError, match="JSON object") as raised:
        validate(Sample, payload)
    assert raised.value.details == {"expected": ["count", "flag", "name"]}


def test_no_payload_is_an_empty_object_when_no_field_is_required():
    assert validate(AllOptional, None) == {"flag": False}


def test_error_report_is_bounded():
    with pytest.raises(ValidationError) as raised:
        validate(Sample, {"name": "a", **{f"k{i}": i for i in range(10_000)}})
    assert len(raised.value.details) == MAX_REPORTED_ERRORS


def test_the_json_schema_comes_from_the_model():
    schema = Sample.model_json_schema()
    assert schema["additionalProperties"] is False and schema["required"] == ["name"]
    assert schema["properties"]["name"]["maxLength"] == 5
