"""Structured logging and Prometheus metrics for the gateway."""

import logging
import sys

import structlog
from prometheus_client import Counter, Histogram

EMAILS_ACCEPTED = Counter("mailstack_gateway_emails_accepted_total", "Emails accepted with 202")
EMAILS_REJECTED = Counter(
    "mailstack_gateway_emails_rejected_total", "Emails refused, by reason", ["reason"]
)
REQUEST_SECONDS = Histogram(
    "mailstack_gateway_request_seconds", "HTTP request latency", ["method", "route", "status"]
)


def configure_logging(level: str, fmt: str) -> None:
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
        cache_logger_on_first_use=True,
    )
