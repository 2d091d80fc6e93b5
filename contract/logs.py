"""Structured logs: key=value text for people, JSON lines for containers (``LOG_FORMAT``)."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(fmt: str, level: int = logging.INFO) -> None:
    renderers: list[structlog.types.Processor]
    if fmt == "json":
        # The traceback goes into the object as text ("exception"); the console renderer
        # formats exc_info by itself.
        renderers = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        # Plain tracebacks: the default (rich, when installed) prints every frame's locals, and
        # those hold client tokens (request heads, query strings) and settings with secrets.
        renderers = [
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            )
        ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # uvicorn's own loggers: errors only, one line each, so they don't drown ours.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s"
    )
