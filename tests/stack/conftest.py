"""Fixtures of the stack tests: the official socket.io-client under Node."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.helpers import ROOT

NODE_MODULES = ROOT / "bench" / "node_modules"


@pytest.fixture(scope="session")
def node_modules():
    """bench/node_modules (socket.io-client), installed from bench's lockfile if missing."""
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed")
    if not (NODE_MODULES / "socket.io-client").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=ROOT / "bench",
                       check=True, timeout=600)
    return NODE_MODULES
