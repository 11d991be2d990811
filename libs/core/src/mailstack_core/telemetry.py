"""Traces and error reports, set up once per process, each on only when configured.

Traces: OpenTelemetry, exported over OTLP/HTTP (protobuf) to OTEL_EXPORTER_OTLP_ENDPOINT. When
that is unset no tracer provider is installed: spans are the API's no-ops and nothing is
exported. The SDK reads the other standard OTEL_* variables itself (headers, sampler, batching).

Errors: Sentry, when SENTRY_DSN is set, with every event scrubbed like the logs are.

Sentry's SDK and OpenTelemetry's are imported only when they are on: together they are about a
sixth of a service's import CPU. Sentry cannot report before something imported it, so a
process that never did has no active client (`_active_sentry`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import context, propagate, trace
from pydantic import BaseModel, SecretStr
from structlog.typing import EventDict

from mailstack_core.scrubbing import scrub

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from sentry_sdk.integrations import Integration

# Span attributes naming what a span is about.
EMAIL_ID_ATTRIBUTE = "mailstack.email_id"
TENANT_ATTRIBUTE = "mailstack.tenant"
# Log fields that become Sentry tags of an error logged with them.
_TAGGED_FIELDS = ("email_id", "tenant", "provider", "message_id")


class TelemetrySettings(BaseModel):
    """What each service's settings read for telemetry (the services' settings inherit it)."""

    # e.g. http://localhost:4318; spans go to <endpoint>/v1/traces.
    otel_exporter_otlp_endpoint: str | None = None
    sentry_dsn: SecretStr | None = None
    sentry_environment: str | None = None
    # Adds Datadog's dd.trace_id and dd.span_id to every log line of a span.
    dd_logs_injection: bool = False


@dataclass(frozen=True)
class Telemetry:
    tracer_provider: TracerProvider | None
    reports_errors: bool

    def shutdown(self) -> None:
        """Export what is still buffered; at the end of the process."""
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.reports_errors and (sentry_sdk := _active_sentry()):
            sentry_sdk.flush(timeout=2)


def traces_endpoint(base: str) -> str:
    return base.rstrip("/") + "/v1/traces"


def tracer_provider(endpoint: str, service_name: str) -> TracerProvider:
    """Spans of this process, batched to the OTLP/HTTP collector at `endpoint`."""
    # Imported only when tracing is on (the exporter brings protobuf and requests).
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(traces_endpoint(endpoint))))
    return provider


def scrub_error_event(event: Any, _: Any) -> Any:
    """Sentry's before_send: the same scrubbing as the log events."""
    return scrub(event)


def configure_telemetry(
    settings: TelemetrySettings,
    service_name: str,
    *,
    sentry_integrations: Sequence[Integration] = (),
) -> Telemetry:
    """Install the tracer provider and the Sentry client this process's settings ask for."""
    provider = None
    if settings.otel_exporter_otlp_endpoint:
        provider = tracer_provider(settings.otel_exporter_otlp_endpoint, service_name)
        trace.set_tracer_provider(provider)
    reports_errors = settings.sentry_dsn is not None and bool(
        settings.sentry_dsn.get_secret_value()
    )
    if reports_errors:
        assert settings.sentry_dsn is not None
        import sentry_sdk

        sentry_sdk.init(
            dsn=settings.sentry_dsn.get_secret_value(),
            environment=settings.sentry_environment,
            server_name=service_name,
            integrations=list(sentry_integrations),
            before_send=scrub_error_event,
            # Errors only: traces go to OpenTelemetry.
            traces_sample_rate=None,
        )
    return Telemetry(provider, reports_errors)


def report_errors_of_tasks() -> None:
    """Sentry's asyncio integration, on the running loop: call it from the loop's first
    coroutine (errors of tasks nobody awaits are reported, each task has its own scope)."""
    if _active_sentry():
        from sentry_sdk.integrations.asyncio import enable_asyncio_integration

        enable_asyncio_integration(task_spans=False)


def _active_sentry() -> ModuleType | None:
    """Sentry's SDK if a client is active: never when nothing has imported it."""
    sentry_sdk = sys.modules.get("sentry_sdk")
    return sentry_sdk if sentry_sdk is not None and sentry_sdk.get_client().is_active() else None


def report_logged_errors(_: Any, __: str, event: EventDict) -> EventDict:
    """A structlog processor: an error logged with its exception (`log.exception(...)`) goes to
    Sentry too, its ids as tags. A no-op while Sentry is off."""
    exc_info = event.get("exc_info")
    if not exc_info or event.get("level") not in ("error", "critical"):
        return event
    if (sentry_sdk := _active_sentry()) is None:
        return event
    if exc_info is True:
        error: Any = sys.exc_info()[1]
    elif isinstance(exc_info, BaseException):
        error = exc_info
    else:
        error = exc_info[1]
    tags = {field: str(event[field]) for field in _TAGGED_FIELDS if event.get(field) is not None}
    extras = {key: value for key, value in event.items() if key != "exc_info"}
    sentry_sdk.capture_exception(error, tags=tags, extras=extras)
    return event


def log_processors() -> list[structlog.types.Processor]:
    """What configure_logging adds for telemetry."""
    return [report_logged_errors]


def annotate(*, email_id: object = None, tenant: str | None = None) -> None:
    """Name the email and tenant on the active span and the Sentry scope (cheap when off)."""
    span = trace.get_current_span()
    if span.is_recording():
        if email_id is not None:
            span.set_attribute(EMAIL_ID_ATTRIBUTE, str(email_id))
        if tenant is not None:
            span.set_attribute(TENANT_ATTRIBUTE, tenant)
    if sentry_sdk := _active_sentry():
        if email_id is not None:
            sentry_sdk.set_tag("email_id", str(email_id))
        if tenant is not None:
            sentry_sdk.set_tag("tenant", tenant)


def extract_context(carrier: Mapping[str, str]) -> context.Context:
    """The trace context a message or request carried (an empty one when it carried none)."""
    return propagate.extract(carrier)
