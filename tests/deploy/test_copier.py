"""The update path for projects made from the template (copier.yml): `copier copy`
makes a project with its own name, and `copier update` brings a later version of the
template into it, keeping the project's own changes and name."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import ROOT

COPIER = Path(sys.executable).parent / "copier"


def run(cwd: Path, *command: str) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result.stdout


def git(cwd: Path, *args: str) -> str:
    return run(cwd, "git", "-c", "user.email=test@example.com", "-c", "user.name=test",
               "-c", "init.defaultBranch=main", *args)


def template_repository(path: Path) -> Path:
    """The template's tracked files as they are in this tree, committed and tagged."""
    for name in run(ROOT, "git", "ls-files", "-z").split("\0"):
        if name and (ROOT / name).is_file():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, path / name)
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "the template")
    git(path, "tag", "v1.0.0")
    return path


def test_copier_makes_a_named_project_and_update_brings_the_template_s_changes(tmp_path):
    template = template_repository(tmp_path / "template")
    project = tmp_path / "project"
    run(tmp_path, str(COPIER), "copy", "--trust", "--defaults", "--data",
        "project_name=Acme \\1 Chat", "--data", "project_slug=acme-chat", str(template), str(project))
    assert (project / "README.md").read_text().startswith("# Acme \\1 Chat\n")
    assert "\nname: acme-chat\n" in (project / "docker-compose.yml").read_text()
    settings = (project / "config" / "settings.py").read_text()
    assert 'jwt_issuer: str = "acme-chat"' in settings
    assert "\nMESSAGE_QUEUE_CHANNEL=acme-chat\n" in (project / ".env.example").read_text()
    assert 'message_queue_channel: str = "acme-chat"' in settings
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["_commit"] == "v1.0.0" and answers["project_slug"] == "acme-chat"
    assert not (project / "copier.yml").exists() and (project / "app" / "__init__.py").exists()
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "a new project")
    # the project's own work...
    chat = project / "app" / "sockets" / "chat.py"
    chat.write_text(chat.read_text() + "\n# Acme's own line\n")
    git(project, "commit", "-qam", "our change")
    # ...and a later template: a new paragraph in the docs, a README line changed
    extending = template / "docs" / "extending.md"
    extending.write_text(extending.read_text() + "\nA paragraph of template v1.1.0.\n")
    readme = template / "README.md"
    lines = readme.read_text().splitlines(keepends=True)
    lines[2] = "The template's second version says this.\n"
    readme.write_text("".join(lines))
    git(template, "commit", "-qam", "v1.1.0")
    git(template, "tag", "v1.1.0")

    run(project, str(COPIER), "update", "--trust", "--defaults")
    assert (project / "docs" / "extending.md").read_text().endswith("A paragraph of template v1.1.0.\n")
    readme_lines = (project / "README.md").read_text().splitlines()
    assert readme_lines[0] == "# Acme \\1 Chat"
    assert readme_lines[2] == "The template's second version says this."
    assert chat.read_text().endswith("# Acme's own line\n")
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] == "v1.1.0"
