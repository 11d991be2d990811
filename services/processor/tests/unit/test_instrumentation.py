"""What a delivery shows from outside: its spans (in the trace its message carried), and the
metrics of its provider calls, failovers, breakers and the queue lag."""

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from mailstack_core import metrics
from mailstack_core.messages import EmailQueuedMessage
from mailstack_processor import instrumentation
from mailstack_processor.consumer import Consumer, queue_lag
from mailstack_processor.delivery import Action, BreakerState, Disposition, RetryPolicy, deliver
from mailstack_processor.providers.base import ProviderUnavailableError, SendReceipt
from mailstack_processor.queue import ReceivedMessage
from mailstack_testing.waiting import eventually_async

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[tuple[trace.Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _failover_counts() -> dict[str, float]:
    sends = metrics.PROCESSOR_SENDS.name
    return {
        "failovers": _sample(
            metrics.PROCESSOR_FAILOVERS.name, from_provider="elasticemail", to_provider="sendgrid"
        ),
        "unavailable": _sample(sends, provider="elasticemail", outcome="unavailable"),
        "sent": _sample(sends, provider="sendgrid", outcome="sent"),
        "timed": _sample(f"{metrics.PROCESSOR_PROVIDER_SECONDS.name}_count", provider="sendgrid"),
    }


def _by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for span in finished:
        named.setdefault(span.name, []).append(span)
    return named


async def test_a_failover_is_a_span_per_provider_call_and_is_counted(
    make: Any, store: Any, policy: RetryPolicy, spans: tuple[trace.Tracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    email = make.email()
    store.add(email)
    failing = make.sender("elasticemail", ProviderUnavailableError("elasticemail", "503", 503))
    working = make.sender("sendgrid", SendReceipt("sendgrid", "sg-1", http_status=202))
    before = _failover_counts()

    with tracer.start_as_current_span("email.deliver") as parent:
        disposition = await deliver(
            email.id,
            1,
            instrumentation.TracedDeliveryStore(store, tracer),
            instrumentation.observed_senders([failing, working], tracer),
            policy,
            30,
        )

    assert disposition.action is Action.DELETE
    named = _by_name(exporter.get_finished_spans())
    assert {name: len(found) for name, found in named.items()} == {
        "email.claim": 1,
        "provider.send": 2,
        "email.record_attempt": 1,
        "email.commit": 1,
        "email.deliver": 1,
    }
    parent_id = parent.get_span_context().span_id
    for name in (
        "email.claim",
        "provider.send",
        "email.record_attempt",
        "email.commit",
    ):
        assert all(span.parent is not None for span in named[name])
        assert {span.parent.span_id for span in named[name] if span.parent} == {parent_id}
    outcomes = {
        span.attributes["mailstack.provider"]: span.attributes["mailstack.outcome"]
        for span in named["provider.send"]
        if span.attributes
    }
    assert outcomes == {"elasticemail": "unavailable", "sendgrid": "sent"}
    assert named["email.commit"][0].attributes == {
        "mailstack.outcome": "sent",
        "mailstack.provider": "sendgrid",
    }
    after = _failover_counts()
    assert {key: after[key] - before[key] for key in before} == {
        "failovers": 1,
        "unavailable": 1,
        "sent": 1,
        "timed": 1,
    }


class FixedBreakers:
    def __init__(self, states: dict[str, BreakerState]) -> None:
        self.states = states

    async def snapshot(self) -> dict[str, BreakerState]:
        return self.states

    async def record_success(self, provider: str) -> None:
        return None

    async def record_failure(self, provider: str, reason: str) -> bool:
        return True


async def test_the_breaker_gauges_show_what_the_processor_last_saw() -> None:
    breakers = instrumentation.ObservedBreakers(
        FixedBreakers({"elasticemail": BreakerState(3, 12.0), "sendgrid": BreakerState(1, 0.0)})
    )

    await breakers.snapshot()

    gauge = metrics.PROCESSOR_BREAKER_OPEN.name
    failures = metrics.PROCESSOR_BREAKER_FAILURES.name
    assert _sample(gauge, provider="elasticemail") == 1
    assert _sample(gauge, provider="sendgrid") == 0
    assert _sample(failures, provider="elasticemail") == 3
    await breakers.record_success("elasticemail")
    assert _sample(gauge, provider="elasticemail") == 0
    assert _sample(failures, provider="elasticemail") == 0


async def test_the_delivery_span_continues_the_trace_its_message_carried(
    queue: Any, spans: tuple[trace.Tracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    email_id = uuid.uuid4()
    queue.put(
        ReceivedMessage(
            "m-1",
            "rh-1",
            EmailQueuedMessage(email_id=email_id).to_json(),
            2,
            sent_at=0.0,
            trace_carrier={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"},
        )
    )

    async def delivered(_: uuid.UUID, __: int) -> Disposition:
        return Disposition(Action.DELETE)

    async def healthy() -> None:
        return None

    consumer = Consumer(
        queue,
        delivered,
        health_check=healthy,
        max_concurrency=2,
        poison_backoff_seconds=1,
        tracer=tracer,
    )
    queue.hold_until = asyncio.Event()  # the receive after this message waits: no empty one
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    await eventually_async(lambda: queue.deleted == ["m-1"], 2, interval=0.005)
    # Sent at the epoch: the lag it measured is that old.
    lag = _sample(metrics.PROCESSOR_QUEUE_LAG.name)
    stop.set()
    await running

    [span] = exporter.get_finished_spans()
    assert span.name == "email.deliver"
    assert span.kind is trace.SpanKind.CONSUMER
    assert trace.format_trace_id(span.context.trace_id) == TRACE_ID
    assert span.parent is not None
    assert trace.format_span_id(span.parent.span_id) == PARENT_SPAN_ID
    assert span.attributes is not None
    assert span.attributes["mailstack.email_id"] == str(email_id)
    assert span.attributes["mailstack.disposition"] == "delete"
    assert lag > 1e9


def test_queue_lag_is_the_age_of_the_oldest_message_received() -> None:
    def message(sent_at: float | None) -> ReceivedMessage:
        return ReceivedMessage("m", "rh", "{}", 1, sent_at=sent_at)

    assert queue_lag([message(90.0), message(70.0), message(None)], now=100.0) == 30.0
    assert queue_lag([], now=100.0) == 0.0
    assert queue_lag([message(None)], now=100.0) == 0.0
