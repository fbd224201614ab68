"""Log lines go to stderr (gunicorn and containers collect them there), as text or
JSON lines (LOG_FORMAT, config/log_format.py)."""

from __future__ import annotations

import logging
import sys

from config.log_format import make_formatter
from config.settings import Settings


def configure_logging(settings: Settings) -> None:
    logger = logging.getLogger("app")
    logger.setLevel(settings.log_level)
    if not logger.handlers:  # a second create_app() in one process adds no duplicate
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(make_formatter(settings.log_format))
        logger.addHandler(handler)
        logger.propagate = False
