"""The Dockerfile and compose file, checked statically (there is no Docker engine here)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.helpers import ROOT

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: install requirements-dev.txt")
    return path


@pytest.fixture(scope="module")
def compose():
    return YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())


def test_hadolint_is_clean():
    result = subprocess.run([tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_matches_the_compose_specification():
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                             "docker-compose.yml"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_references_files_that_exist(compose):
    assert (ROOT / compose["services"]["app"]["build"] / "Dockerfile").is_file()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            assert (ROOT / volume.split(":")[0]).exists(), volume
    assert (ROOT / ".env.example").is_file()  # what .env is copied from


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
