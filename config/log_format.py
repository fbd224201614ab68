"""The log line formats of LOG_FORMAT, for the app's loggers and gunicorn's.

Here, not in the app package: gunicorn's master loads the JSON formatter, and
importing `app` there (Flask, before the worker's monkey-patching) breaks eventlet.

text: one readable line per record. json: one JSON object per line, for a log
pipeline: time, level, logger, message, pid, and the structured fields a log call
passes in `extra` (STRUCTURED_FIELDS only: a token is never one of them).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
STRUCTURED_FIELDS = ("namespace", "event", "outcome", "user_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in STRUCTURED_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def make_formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
