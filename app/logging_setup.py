"""Log lines go to stderr (gunicorn and containers collect them there).

LOG_FORMAT=text: one readable line per record. LOG_FORMAT=json: one JSON object per
line, for a log pipeline: time, level, logger, message, pid, and the structured
fields a log call passes in `extra` (STRUCTURED_FIELDS: never a token, no field
outside that list is written). config/gunicorn.conf.py gives gunicorn's own lines the
same formatter.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from config.settings import Settings

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
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
    return JsonFormatter() if log_format == "json" else logging.Formatter(FORMAT)


def configure_logging(settings: Settings) -> None:
    logger = logging.getLogger("app")
    logger.setLevel(settings.log_level)
    if not logger.handlers:  # a second create_app() in one process adds no duplicate
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(make_formatter(settings.log_format))
        logger.addHandler(handler)
        logger.propagate = False
