"""Structured logging set up the same way by every mailstack process: JSON events on stdout,
secrets scrubbed, and the ids of the active trace span so that a log line opens its trace."""

import logging
import sys
from collections.abc import Sequence
from typing import Any

import structlog
from opentelemetry import trace
from structlog.typing import EventDict

from mailstack_core.scrubbing import scrub_log_event

# Datadog correlates a log with its trace by the lower 64 bits of the trace id, in decimal.
_DATADOG_ID_MASK = (1 << 64) - 1


def add_trace_ids(_: Any, __: str, event: EventDict) -> EventDict:
    """`trace_id` and `span_id` (W3C hex) of the span active where the event was logged."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = trace.format_trace_id(context.trace_id)
        event["span_id"] = trace.format_span_id(context.span_id)
    return event


def add_datadog_trace_ids(_: Any, __: str, event: EventDict) -> EventDict:
    """`dd.trace_id` and `dd.span_id` as Datadog's log-trace correlation reads them."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["dd.trace_id"] = str(context.trace_id & _DATADOG_ID_MASK)
        event["dd.span_id"] = str(context.span_id)
    return event


def configure_logging(
    level: str,
    fmt: str,
    *,
    cache_loggers: bool = True,
    datadog_trace_ids: bool = False,
    processors: Sequence[structlog.types.Processor] = (),
) -> None:
    """`fmt` is "json" (production) or "console" (people). Lambdas pass cache_loggers=False:
    a warm container may be configured again by its next invocation. `processors` run after
    the trace ids are added and before exceptions are formatted (error reporting hooks in)."""
    logging.basicConfig(format="%(message)s", stream=sys.stdout, level=level.upper())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    trace_ids: list[structlog.types.Processor] = [add_trace_ids]
    if datadog_trace_ids:
        trace_ids.append(add_datadog_trace_ids)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *trace_ids,
            *processors,
            structlog.processors.format_exc_info,
            scrub_log_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=cache_loggers,
    )
