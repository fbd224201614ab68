"""Writes the project's name (from .copier-answers.yml) where the template carries its
own: run by copier after `copier copy` and after every `copier update`, so a change of
the template to one of these files keeps the project's name. Idempotent."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml


def main() -> int:
    answers = yaml.safe_load(Path(".copier-answers.yml").read_text())
    name, slug = answers["project_name"].strip(), answers["project_slug"]
    # (pattern, the line that replaces its match): a name is never read as a pattern
    edits = {
        "README.md": [(r"\A# .*", f"# {name}")],
        "docker-compose.yml": [(r"(?m)^name: .*$", f"name: {slug}")],
        ".env.example": [(r"(?m)^MESSAGE_QUEUE_CHANNEL=.*$", f"MESSAGE_QUEUE_CHANNEL={slug}")],
        "config/settings.py": [
            (r'(?m)^    message_queue_channel: str = ".*"$',
             f'    message_queue_channel: str = "{slug}"'),
            (r'(?m)^    jwt_issuer: str = ".*"$', f'    jwt_issuer: str = "{slug}"'),
            (r'(?m)^    jwt_audience: str = ".*"$', f'    jwt_audience: str = "{slug}-clients"'),
        ],
    }
    for path, changes in edits.items():
        file = Path(path)
        if not file.exists():  # the project removed it: its choice
            continue
        text = file.read_text()
        for pattern, line in changes:
            text = re.sub(pattern, lambda _, line=line: line, text, count=1)
        file.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
