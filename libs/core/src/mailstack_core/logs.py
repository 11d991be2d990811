"""Structured logging set up the same way by every mailstack process: JSON events on stdout."""

import logging
import sys

import structlog


def configure_logging(level: str, fmt: str, *, cache_loggers: bool = True) -> None:
    """`fmt` is "json" (production) or "console" (people). Lambdas pass cache_loggers=False:
    a warm container may be configured again by its next invocation."""
    logging.basicConfig(format="%(message)s", stream=sys.stdout, level=level.upper())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=cache_loggers,
    )
