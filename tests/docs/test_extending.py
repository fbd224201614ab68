"""docs/extending.md, "A Socket.IO namespace", followed verbatim on a copy of the
repository: its new files written as they are, its registry lines applied, then the
copy's new test run by pytest and the new namespace looked for in the copy's
/api/asyncapi.json (checked against the official AsyncAPI schema)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.asyncapi.schema import check_document, official_schema
from tests.helpers import ASYNC_MODE, ROOT

pytestmark = pytest.mark.servers  # the copy's own test starts its server

DOC = ROOT / "docs" / "extending.md"
# `<!-- new file: PATH -->` or `<!-- registry: PATH -->`, then a fenced code block.
BLOCK = re.compile(r"<!-- (new file|registry): (\S+) -->\n```\w*\n(.*?)```", re.S)
COPIED = ("app", "config", "tests", "wsgi.py", "pyproject.toml")
IGNORED = shutil.ignore_patterns("node_modules", "__pycache__", "artifacts", ".pytest_cache")


def doc_blocks() -> list[tuple[str, str, str]]:
    return BLOCK.findall(DOC.read_text())


def apply_registry(path, lines: str) -> None:
    """What the doc asks of the registry: its import after the imports, and its
    NAMESPACES line (which must be today's line with one namespace more) in place."""
    imports = [line for line in lines.splitlines() if line.startswith(("from ", "import "))]
    (assignment,) = [line for line in lines.splitlines() if "=" in line]
    source = path.read_text().splitlines()
    name = assignment.split("=")[0].strip()
    (index,) = [i for i, line in enumerate(source) if line.startswith(f"{name} = ")]
    added = assignment.rstrip(")").rsplit(", ", 1)[1]
    assert assignment == source[index].rstrip(")") + f", {added})", (
        f"docs/extending.md's {name} line is not today's {source[index]!r} plus one namespace")
    source[index] = assignment
    last_import = max(i for i, line in enumerate(source) if line.startswith(("from ", "import ")))
    source[last_import + 1:last_import + 1] = imports
    path.write_text("\n".join(source) + "\n")


def test_the_doc_has_the_blocks_this_test_follows():
    kinds = [(kind, path) for kind, path, _ in doc_blocks()]
    assert ("new file", "app/sockets/board.py") in kinds
    assert ("registry", "app/sockets/__init__.py") in kinds
    assert any(kind == "new file" and path.startswith("tests/") for kind, path in kinds)


def test_following_the_doc_gives_a_namespace_with_a_passing_test(tmp_path):
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=IGNORED)
        else:
            shutil.copy2(source, copy / name)
    tests = []
    for kind, path, text in doc_blocks():
        target = copy / path
        if kind == "new file":
            assert not target.exists(), f"the doc's new file {path} exists already"
            target.write_text(text)
            if path.startswith("tests/"):
                tests.append(path)
        else:
            apply_registry(target, text)
    env = {**os.environ, "ASYNC_MODE": ASYNC_MODE, "PYTHONDONTWRITEBYTECODE": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                         cwd=copy, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert re.search(r"\b3 passed\b", run.stdout), run.stdout[-2000:]

    # The copy's document, as its server builds it: the new namespace, with no extra work.
    dump = ("import json; from app import create_app; from config.settings import load_settings; "
            "from tests.helpers import process_environment; "
            "app = create_app(load_settings(environ=process_environment(), env_file='')); "
            "print(json.dumps(app.test_client().get('/api/asyncapi.json').get_json()))")
    out = subprocess.run([sys.executable, "-c", dump], cwd=copy, env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    document = json.loads(out.splitlines()[-1])
    check_document(document, official_schema())
    board = document["channels"]["board"]
    assert board["address"] == "/board"
    move = document["components"]["messages"]["board.move"]
    assert move["name"] == "move"
    assert move["payload"]["required"] == ["card", "column"]
    assert move["payload"]["properties"]["column"]["maximum"] == 9
    assert document["components"]["messages"]["board.server.moved"]["name"] == "moved"
    assert document["operations"]["board.move"]["action"] == "receive"
    assert {"chat", "admin", "board"} <= set(document["channels"])


@pytest.mark.parametrize("registry", ["NAMESPACES = (ChatNamespace, BoardNamespace)"])
def test_a_stale_registry_line_in_the_doc_is_caught(tmp_path, registry):
    target = tmp_path / "__init__.py"
    shutil.copy2(ROOT / "app" / "sockets" / "__init__.py", target)
    with pytest.raises(AssertionError, match="not today's"):
        apply_registry(target, f"from app.sockets.board import BoardNamespace\n{registry}\n")
