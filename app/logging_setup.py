"""Log lines go to stderr (gunicorn and containers collect them there)."""

from __future__ import annotations

import logging
import sys

from config.settings import Settings

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def configure_logging(settings: Settings) -> None:
    logger = logging.getLogger("app")
    logger.setLevel(settings.log_level)
    if not logger.handlers:  # a second create_app() in one process adds no duplicate
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
        logger.propagate = False
