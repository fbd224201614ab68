"""web/'s npm packages, installed once for the tests that read them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT

WEB = ROOT / "web"


@pytest.fixture(scope="session")
def web_modules(tmp_path_factory) -> Path:
    """A directory holding web/'s package files and node_modules, from `npm ci` (exactly
    the lockfile, integrity hashes checked), not from whatever web/node_modules holds."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is missing (Node.js): the tests of app/web's vendored files and of "
                    "the client types need it")
    directory = tmp_path_factory.mktemp("web")
    for name in ("package.json", "package-lock.json"):
        shutil.copy(WEB / name, directory / name)
    result = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                            cwd=directory, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return directory
