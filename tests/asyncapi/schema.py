"""The official AsyncAPI JSON Schema (npm @asyncapi/specs, pinned in package.json here)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest

HERE = Path(__file__).parent
SPEC = HERE / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0.json"


def official_schema() -> dict:
    """The AsyncAPI 3.0.0 JSON Schema (bundled: every $ref is inside it); `npm ci` first
    if needed, as tests/stack does for bench/node_modules."""
    if not SPEC.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed (needed for @asyncapi/specs)")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=HERE,
                       check=True, timeout=600)
    return json.loads(SPEC.read_text())


def check_document(document: dict, schema: dict) -> None:
    """Raises with every problem of the document against the AsyncAPI schema."""
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(document)]
    assert not errors, "\n".join(errors)
