"""One trace follows an email from the gateway's request, across the queue, to each provider call.

The stack exports its spans over OTLP/HTTP to a collector this test runs (a real HTTP server
that decodes each ExportTraceServiceRequest), as it would to Jaeger or an OpenTelemetry
Collector.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from email_flows import SENT_OR_LATER, gateway_client, history, steps, submit, wait_for_final
from mailstack_stubs.control import StubControl
from mailstack_testing.recording import RecordingServer
from mailstack_testing.waiting import eventually

pytestmark = pytest.mark.e2e

GATEWAY = "mailstack-gateway"
PROCESSOR = "mailstack-processor"


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]


def _value(pair: KeyValue) -> Any:
    kind = pair.value.WhichOneof("value")
    return getattr(pair.value, kind) if kind else None


def received_spans(collector: RecordingServer) -> list[ReceivedSpan]:
    """Every span exported to the collector so far, with the service that made it."""
    spans = []
    for request in collector.requests_to("/v1/traces"):
        export = ExportTraceServiceRequest.FromString(request.body)
        for resource_spans in export.resource_spans:
            resource = {pair.key: _value(pair) for pair in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                spans.extend(
                    ReceivedSpan(
                        service=str(resource.get("service.name")),
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes={pair.key: _value(pair) for pair in span.attributes},
                    )
                    for span in scope_spans.spans
                )
    return spans


def ancestors(span: ReceivedSpan, spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    """The span's parent, its parent's parent, ... as far as they were received."""
    by_id = {candidate.span_id: candidate for candidate in spans}
    chain = []
    current = by_id.get(span.parent_span_id)
    while current is not None and current not in chain:
        chain.append(current)
        current = by_id.get(current.parent_span_id)
    return chain


def descendants(span: ReceivedSpan, spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [other for other in spans if span in ancestors(other, spans)]


@pytest.fixture
def collector() -> Iterator[RecordingServer]:
    answer = ExportTraceServiceResponse().SerializeToString()
    with RecordingServer(answer, content_type="application/x-protobuf") as server:
        yield server


def test_one_trace_spans_the_request_the_queue_and_every_provider_call(
    stack_factory: Any, collector: RecordingServer
) -> None:
    telemetry = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        # Export every 200 ms rather than every 5 s.
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    stack = stack_factory({"gateway": telemetry, "processor": telemetry})
    # The primary fails, so the delivery makes two provider calls: a failover.
    StubControl(stack.elasticemail_stub_url).set_behaviour("error")
    with gateway_client(stack) as gateway:
        email_id = submit(gateway)
        assert wait_for_final(gateway, email_id)["status"] in SENT_OR_LATER
        assert ("SENT", "sendgrid") in steps(history(gateway, email_id))

    def about_the_email(spans: list[ReceivedSpan]) -> set[tuple[str, str]]:
        return {
            (span.service, span.name)
            for span in spans
            if span.attributes.get("mailstack.email_id") == email_id
        }

    spans = eventually(
        lambda: received_spans(collector),
        30,
        interval=0.2,
        # The delivery's span ends last, after its children.
        until=lambda spans: (
            {(GATEWAY, "POST /v1/emails"), (PROCESSOR, "email.deliver")} <= about_the_email(spans)
        ),
        what="the gateway's and the processor's spans at the collector",
    )

    request = next(
        span
        for span in spans
        if span.service == GATEWAY and span.attributes.get("mailstack.email_id") == email_id
    )
    assert request.name == "POST /v1/emails"
    assert request.attributes["mailstack.tenant"] == "dev"
    delivery = next(
        span
        for span in spans
        if span.name == "email.deliver" and span.attributes.get("mailstack.email_id") == email_id
    )
    assert delivery.service == PROCESSOR
    assert delivery.trace_id == request.trace_id
    assert request in ancestors(delivery, spans)
    assert delivery.attributes["mailstack.tenant"] == "dev"

    below = descendants(delivery, spans)
    assert {span.trace_id for span in below} == {request.trace_id}
    names = [span.name for span in below]
    assert names.count("email.claim") == 1
    assert names.count("email.commit") == 1
    assert names.count("email.record_attempt") == 1
    calls = {
        span.attributes["mailstack.provider"]: span
        for span in below
        if span.name == "provider.send"
    }
    assert calls["elasticemail"].attributes["mailstack.outcome"] == "unavailable"
    assert calls["sendgrid"].attributes["mailstack.outcome"] == "sent"
    for provider, call in calls.items():
        http = [span for span in below if span.parent_span_id == call.span_id]
        assert [span.name for span in http] == ["POST"], provider
