"""Structured logging and Prometheus metrics for the processor."""

import logging
import sys

import structlog
from prometheus_client import Counter, Gauge

MESSAGES_RECEIVED = Counter("mailstack_processor_messages_received_total", "SQS messages received")
MESSAGES_POISON = Counter(
    "mailstack_processor_messages_poison_total", "Messages that are not a known email message"
)
DISPOSITIONS = Counter(
    "mailstack_processor_dispositions_total", "What happened to each handled message", ["action"]
)
HANDLING_ERRORS = Counter(
    "mailstack_processor_handling_errors_total",
    "Messages whose handling raised (e.g. database down)",
)
DEAD_LETTERS = Counter(
    "mailstack_processor_dead_letters_total", "Dead-lettered messages looked at", ["outcome"]
)
IN_FLIGHT = Gauge("mailstack_processor_in_flight", "Messages being handled now")
LAST_POLL = Gauge(
    "mailstack_processor_last_poll_timestamp_seconds", "When the queue was last polled"
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
