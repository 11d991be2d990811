"""Logs carry the active span's ids and no secrets; the trace context rides on queue messages;
an error logged with its exception reaches Sentry (a real HTTP server standing in for it)."""

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from mailstack_core import queueing
from mailstack_core.logs import configure_logging
from mailstack_core.scrubbing import REDACTED, scrub
from mailstack_core.telemetry import TelemetrySettings, configure_telemetry, log_processors
from mailstack_testing.recording import RecordingServer, sentry_events
from mailstack_testing.waiting import eventually

API_KEY = f"ms_{'a1' * 8}_{'Z' * 43}"


@pytest.fixture
def tracer() -> Iterator[trace.Tracer]:
    provider = TracerProvider()
    yield provider.get_tracer("test")
    provider.shutdown()


@pytest.fixture
def logged(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """The JSON events logged during the test, after configure_logging(...) in it."""

    def read() -> list[dict[str, Any]]:
        return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]

    yield read
    structlog.reset_defaults()


def test_secrets_are_scrubbed_by_key_and_out_of_text() -> None:
    event = {
        "event": "provider.failed",
        "headers": {"Authorization": "Bearer abc.def", "X-ElasticEmail-ApiKey": "k-123"},
        "error": f"refused {API_KEY} at postgresql://app:hunter2@db:5432/mail",
        "detail": ["token Bearer xyz", {"password": "p"}],
        "email_id": "0d6f",
        "attempts": 3,
    }

    scrubbed = scrub(event)

    assert scrubbed["headers"] == {"Authorization": REDACTED, "X-ElasticEmail-ApiKey": REDACTED}
    assert scrubbed["error"] == (
        f"refused ms_{REDACTED} at postgresql://app:{REDACTED}@db:5432/mail"
    )
    assert scrubbed["detail"] == [f"token Bearer {REDACTED}", {"password": REDACTED}]
    assert (scrubbed["email_id"], scrubbed["attempts"]) == ("0d6f", 3)
    assert event["headers"]["Authorization"] == "Bearer abc.def"  # a copy, not in place


def test_log_lines_carry_the_span_ids_in_w3c_and_datadog_form(
    tracer: trace.Tracer, logged: Any
) -> None:
    configure_logging("INFO", "json", cache_loggers=False, datadog_trace_ids=True)
    log = structlog.get_logger("test")

    with tracer.start_as_current_span("work") as span:
        log.info("inside", api_key=API_KEY)
    log.info("outside")

    inside, outside = logged()
    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert inside["dd.trace_id"] == str(context.trace_id & (2**64 - 1))
    assert inside["dd.span_id"] == str(context.span_id)
    assert inside["api_key"] == REDACTED
    assert "trace_id" not in outside
    assert "dd.trace_id" not in outside


def test_log_lines_have_no_datadog_ids_unless_asked(tracer: trace.Tracer, logged: Any) -> None:
    configure_logging("INFO", "json", cache_loggers=False)
    with tracer.start_as_current_span("work"):
        structlog.get_logger("test").info("inside")

    [line] = logged()
    assert "trace_id" in line
    assert "dd.trace_id" not in line


class RecordingSqs:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:  # noqa: N803
        self.entries.extend(Entries)
        return {"Successful": [], "Failed": []}


def test_each_message_carries_its_emails_trace_context_else_the_callers(
    tracer: trace.Tracer,
) -> None:
    sqs = RecordingSqs()
    carried, uncarried = uuid.uuid4(), uuid.uuid4()
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    with tracer.start_as_current_span("relay") as span:
        queueing.publish_queued(
            sqs,  # type: ignore[arg-type]
            "queue",
            [carried, uncarried],
            {carried: {"traceparent": traceparent, "tracestate": "vendor=1"}},
        )
    queueing.publish_queued(sqs, "queue", [uuid.uuid4()])  # type: ignore[arg-type]

    first, second, untraced = sqs.entries
    assert first["MessageAttributes"] == {
        "traceparent": {"DataType": "String", "StringValue": traceparent},
        "tracestate": {"DataType": "String", "StringValue": "vendor=1"},
    }
    own = second["MessageAttributes"]["traceparent"]["StringValue"]
    assert own.split("-")[1] == f"{span.get_span_context().trace_id:032x}"
    assert "MessageAttributes" not in untraced


def test_an_error_logged_with_its_exception_reaches_sentry_tagged_and_scrubbed(
    logged: Any,
) -> None:
    with RecordingServer(b"{}") as server:
        dsn = f"http://publickey@{server.url.removeprefix('http://')}/7"
        try:
            configure_telemetry(TelemetrySettings(sentry_dsn=dsn), "mailstack-test")
            configure_logging("INFO", "json", cache_loggers=False, processors=log_processors())
            email_id = str(uuid.uuid4())
            try:
                raise ConnectionError(f"database gone, key {API_KEY}")
            except ConnectionError as error:
                structlog.get_logger("test").exception(
                    "message.handling_failed", email_id=email_id, error=str(error)
                )
            structlog.get_logger("test").warning("not an error", email_id=email_id)
            sentry_sdk.flush(timeout=5)

            [event] = eventually(lambda: sentry_events(server), 10, what="a Sentry event")
        finally:
            sentry_sdk.init()

    assert event["tags"]["email_id"] == email_id
    [error] = event["exception"]["values"]
    assert error["type"] == "ConnectionError"
    assert error["value"] == f"database gone, key ms_{REDACTED}"
    assert API_KEY not in json.dumps(event)
    assert [line["event"] for line in logged()] == ["message.handling_failed", "not an error"]


@pytest.mark.parametrize(
    "entry_module",
    ["mailstack_gateway.main", "mailstack_processor.main", "mailstack_processor.webhooks.main"],
)
def test_a_service_with_telemetry_off_does_not_load_the_sentry_or_tracing_sdks(
    entry_module: str,
) -> None:
    # They are a sixth of a service's import CPU; the suite starts about a hundred services.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, {entry_module}; "
            "sdks = ('sentry_sdk', 'opentelemetry.sdk.trace'); "
            "print(sorted(name for name in sdks if name in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"
