"""Who may read GET /api/asyncapi.json (ASYNCAPI_ACCESS): everyone in development, an
admin's token in production (the contract maps every event a client can send), nobody
when off. Through the bundled nginx: tests/stack/test_stack.py."""

from __future__ import annotations

import pytest

from app import create_app
from config.settings import load_settings
from tests.config.test_settings import PRODUCTION_OK
from tests.helpers import process_environment


def client_for(**environ):
    settings = load_settings(environ=process_environment(**environ), env_file="")
    return create_app(settings).test_client()


def test_production_serves_the_contract_to_admins_only(make_token):
    assert load_settings(environ=PRODUCTION_OK, env_file="").asyncapi_access == "admin"
    http = client_for(ASYNCAPI_ACCESS="admin")
    anonymous = http.get("/api/asyncapi.json")
    assert anonymous.status_code == 401, anonymous.get_json()
    user = http.get("/api/asyncapi.json",
                    headers={"Authorization": f"Bearer {make_token('bob', 'user')}"})
    assert user.status_code == 403 and user.get_json()["error"]["code"] == "forbidden"
    admin = http.get("/api/asyncapi.json",
                     headers={"Authorization": f"Bearer {make_token('root', 'admin')}"})
    assert admin.status_code == 200 and admin.get_json()["asyncapi"] == "3.0.0"


@pytest.mark.parametrize(("access", "status"), [("public", 200), ("off", 404)])
def test_public_or_off(access, status):
    assert client_for(ASYNCAPI_ACCESS=access).get("/api/asyncapi.json").status_code == status


def test_an_unknown_access_is_a_settings_error():
    with pytest.raises(ValueError, match="ASYNCAPI_ACCESS must be one of"):
        load_settings(environ=process_environment(ASYNCAPI_ACCESS="secret"), env_file="")
