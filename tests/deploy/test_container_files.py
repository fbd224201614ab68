"""The Dockerfile and compose file, checked statically (there is no Docker engine here)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from config.settings import SettingsError, load_settings, read_env_file
from tests.helpers import ROOT

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: install requirements-dev.txt")
    return path


COMPOSE_FILES = ("docker-compose.yml", "deploy/compose.production.yml")


def load_yaml(path: str):
    return YAML(typ="safe").load((ROOT / path).read_text())


@pytest.fixture(scope="module")
def compose():
    return load_yaml("docker-compose.yml")


@pytest.fixture(scope="module")
def production():
    return load_yaml("deploy/compose.production.yml")


def test_hadolint_is_clean():
    result = subprocess.run([tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", COMPOSE_FILES)
def test_compose_files_match_the_compose_specification(path):
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                             path], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def app_environment(*files, project: Path = ROOT) -> dict[str, str]:
    """The app container's environment as compose builds it: env_file first (relative to
    the project directory), then every file's `environment:` merged in order, which wins."""
    env_files, environment = [], {}
    for service in (f["services"]["app"] for f in files):
        env_files += service.get("env_file", [])
        environment.update(service.get("environment", {}))
    merged: dict[str, str] = {}
    for path in env_files:
        merged.update(read_env_file(project / path))
    merged.update({key: str(value) for key, value in environment.items()})
    return merged


def test_the_default_compose_stack_starts_without_any_edit(compose):
    """A fresh clone: no .env, nothing to edit; a development stack (before, the app
    restart-looped on production's refusals)."""
    assert "env_file" not in compose["services"]["app"]  # no .env needed
    settings = load_settings(environ=app_environment(compose), env_file="")
    assert settings.app_env == "development" and settings.bind == "0.0.0.0:5000"
    assert settings.uses_redis and settings.proxy_hops == 1
    # the image has no .env either (.dockerignore), so the settings come from here only
    assert ".env" in (ROOT / ".dockerignore").read_text().splitlines()


def test_the_production_switch_refuses_the_defaults(compose, production, tmp_path):
    # a .env copied from .env.example without edits: refused, not started
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    environment = app_environment(compose, production, project=tmp_path)
    assert environment["APP_ENV"] == "production"
    with pytest.raises(SettingsError, match=r"(?s)SECRET_KEY .*JWT_SECRET .*DEMO_USERS"):
        load_settings(environ=environment, env_file="")
    # with real secrets it starts, and the topology stays the compose file's
    strong = "s" * 48
    (tmp_path / ".env").write_text(f"SECRET_KEY={strong}\nJWT_SECRET={strong}j\n"
                                   f"DEMO_USERS=ops:admin:{strong}\nBIND=127.0.0.1:9\n")
    settings = load_settings(environ=app_environment(compose, production, project=tmp_path),
                             env_file="")
    assert settings.is_production and settings.bind == "0.0.0.0:5000"


def test_compose_references_files_that_exist(compose, production):
    assert (ROOT / compose["services"]["app"]["build"] / "Dockerfile").is_file()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):  # a named volume: declared at the top
                assert source in compose["volumes"], volume
                continue
            assert (ROOT / source).exists(), volume
    assert production["services"]["app"]["env_file"] == [".env"]  # required: no silent default
    assert (ROOT / ".env.example").is_file()  # what .env is copied from


def test_nginx_image_follows_replicas(compose):
    """`server app:5000 resolve` in an upstream is open-source nginx from 1.27.3."""
    image = compose["services"]["nginx"]["image"]
    version = tuple(int(part) for part in image.split(":")[1].split("-")[0].split("."))
    assert version >= (1, 27, 3), image  # "1.27" alone may be older
    assert "resolve" in (ROOT / "deploy/nginx/nginx.conf").read_text()


def test_only_nginx_publishes_a_port_and_every_service_has_a_healthcheck_or_waits(compose):
    services = compose["services"]
    assert [name for name, s in services.items() if "ports" in s] == ["nginx"]
    assert "healthcheck" in services["redis"] and "healthcheck" in services["app"]
    assert services["app"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["nginx"]["depends_on"]["app"]["condition"] == "service_healthy"
    assert services["app"]["deploy"]["replicas"] >= 2


def test_image_runs_as_non_root_with_the_gunicorn_config():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "\nUSER 10001:10001\n" in dockerfile
    assert 'CMD ["gunicorn", "-c", "config/gunicorn.conf.py"]' in dockerfile
    assert dockerfile.count("\nFROM ") == 2  # multi-stage
    assert "HEALTHCHECK" in dockerfile


def test_no_secret_is_committed():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout
    assert ".env\n" not in tracked.replace(".env.example\n", "")
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
