"""How the processor's long-running processes (the processor, the webhook dispatcher) start and
stop: telemetry and logs first, /healthz and /metrics on their health port, then their work on
uvloop until SIGTERM or SIGINT asks them to stop."""

import asyncio
import functools
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
import uvloop
from prometheus_client import start_http_server

from mailstack_core import heap, telemetry
from mailstack_core.logs import configure_logging

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = structlog.get_logger(__name__)

# The work: runs until the event is set, with the tracer provider when tracing is on.
Serve = Callable[[asyncio.Event, "TracerProvider | None"], Awaitable[None]]


def _request_stop(stop: asyncio.Event, name: str, signum: int) -> None:
    log.info(f"{name}.stopping", signal=signal.Signals(signum).name)
    stop.set()


async def _main(name: str, serve: Serve, tracer_provider: "TracerProvider | None") -> None:
    telemetry.report_errors_of_tasks()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, functools.partial(_request_stop, stop, name, signum))
    await serve(stop, tracer_provider)


def run_service(
    settings: telemetry.TelemetrySettings,
    service_name: str,
    logs: tuple[str, str],
    health: tuple[str, int],
    serve: Serve,
) -> None:
    """Run `serve` as service `service_name` (`mailstack-<name>`, which also prefixes its
    stopping log event), logging at `logs` (level, format); a health port of 0 serves no
    /healthz."""
    observed = telemetry.configure_telemetry(settings, service_name)
    level, format_ = logs
    configure_logging(
        level,
        format_,
        datadog_trace_ids=settings.dd_logs_injection,
        processors=telemetry.log_processors(),
    )
    host, port = health
    if port:
        # /healthz and /metrics (any path answers with the metrics while the process lives).
        start_http_server(port, addr=host)
    heap.freeze_startup_heap()
    try:
        uvloop.run(_main(service_name.removeprefix("mailstack-"), serve, observed.tracer_provider))
    finally:
        observed.shutdown()
