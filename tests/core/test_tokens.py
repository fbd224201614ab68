"""TokenService: issue and verify, with one reason code per failure."""

from __future__ import annotations

import pytest

from app.core.errors import AuthError
from app.core.tokens import TokenService, bearer_token


def test_issued_token_verifies(tokens):
    identity = tokens.verify(tokens.issue("alice", "Alice", "user"))
    assert (identity.id, identity.name, identity.role, identity.is_admin) == \
        ("alice", "Alice", "user", False)


def test_key_rotation_invalidates_old_tokens(settings, tokens):
    from dataclasses import replace

    rotated = TokenService(replace(settings, jwt_secret="rotated-" + "k" * 40))
    with pytest.raises(AuthError) as raised:
        rotated.verify(tokens.issue("alice", "Alice", "user"))
    assert raised.value.code == "invalid_token"


@pytest.mark.parametrize("token, code", [
    (None, "missing_token"), ("", "missing_token"), (["x"], "malformed_token"),
    ("a.b.c", "malformed_token"), ("x" * 5000, "malformed_token")])
def test_malformed_input(tokens, token, code):
    with pytest.raises(AuthError) as raised:
        tokens.verify(token)
    assert raised.value.code == code


def test_claims_with_wrong_types_are_refused(tokens, make_token):
    for claims in ({"sub": 5}, {"name": ["x"]}, {"role": None}):
        with pytest.raises(AuthError) as raised:
            tokens.verify(make_token(**claims))
        assert raised.value.code == "invalid_token"


@pytest.mark.parametrize("header, token", [
    ("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None),
    ("", None), (None, None)])
def test_bearer_header_parsing(header, token):
    assert bearer_token(header) == token
