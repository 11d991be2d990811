"""Delivery seen from outside: spans and metrics around its ports (the store, each provider and
the breakers), so that delivery.py stays a pure decision table that knows nothing of them.

Under the consumer's `email.deliver` span, one delivery makes an `email.claim` span, a
`provider.send` span per provider call (`providers.http.post_json` adds the HTTP request under
it), `email.record_attempt` per failed call and `email.commit` for the outcome.
"""

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace

from mailstack_core.metrics import SendOutcome
from mailstack_core.telemetry import TENANT_ATTRIBUTE, annotate
from mailstack_processor.delivery import (
    Action,
    BreakerState,
    CircuitBreakers,
    Claim,
    ClaimState,
    DeadLetterOutcome,
    DeliveryStore,
)
from mailstack_processor.observability import (
    BREAKER_FAILURES,
    BREAKER_OPEN,
    DISPOSITIONS,
    FAILOVERS,
    PROVIDER_SECONDS,
    SENDS,
)
from mailstack_processor.providers.base import (
    EmailSender,
    OutgoingEmail,
    ProviderError,
    ProviderMisconfiguredError,
    ProviderRejectedError,
    SendReceipt,
)

PROVIDER_ATTRIBUTE = "mailstack.provider"
OUTCOME_ATTRIBUTE = "mailstack.outcome"


def send_outcome(error: ProviderError) -> SendOutcome:
    if isinstance(error, ProviderRejectedError):
        return SendOutcome.REJECTED
    if isinstance(error, ProviderMisconfiguredError):
        return SendOutcome.MISCONFIGURED
    return SendOutcome.UNKNOWN if error.outcome_unknown else SendOutcome.UNAVAILABLE


def preset_metrics(providers: Sequence[str]) -> None:
    """Every series with known labels exists from the start, at zero: a dashboard or alert
    sees "no failovers yet" rather than no data."""
    for provider in providers:
        for outcome in SendOutcome:
            SENDS.labels(provider=provider, outcome=outcome.value)
        PROVIDER_SECONDS.labels(provider=provider)
        BREAKER_OPEN.labels(provider=provider).set(0)
        BREAKER_FAILURES.labels(provider=provider).set(0)
        for other in providers:
            if other != provider:
                FAILOVERS.labels(from_provider=provider, to_provider=other)
    for action in Action:
        DISPOSITIONS.labels(action=action.value)


class TracedDeliveryStore:
    """A DeliveryStore whose claim and writes are spans of the delivery."""

    def __init__(self, store: DeliveryStore, tracer: trace.Tracer | None = None) -> None:
        self._store = store
        self._tracer = tracer or trace.get_tracer(__name__)

    @contextmanager
    def _span(self, name: str, **attributes: Any) -> Iterator[trace.Span]:
        with self._tracer.start_as_current_span(name, attributes=attributes) as span:
            yield span

    async def claim(self, email_id: uuid.UUID, lease_seconds: int, receive_count: int) -> Claim:
        delivery_span = trace.get_current_span()
        with self._span("email.claim") as span:
            claim = await self._store.claim(email_id, lease_seconds, receive_count)
            span.set_attribute("mailstack.claim", claim.state.value)
            if claim.state is ClaimState.CLAIMED:
                span.set_attribute("mailstack.suppressed_recipients", len(claim.suppressed))
            if claim.tenant_id is not None:
                span.set_attribute(TENANT_ATTRIBUTE, claim.tenant_id)
        if claim.tenant_id is not None:
            delivery_span.set_attribute(TENANT_ATTRIBUTE, claim.tenant_id)
            annotate(tenant=claim.tenant_id)
        return claim

    async def record_failed_attempt(
        self, email_id: uuid.UUID, provider: str, detail: dict[str, Any]
    ) -> None:
        with self._span("email.record_attempt", **{PROVIDER_ATTRIBUTE: provider}):
            await self._store.record_failed_attempt(email_id, provider, detail)

    async def mark_sent(
        self,
        email_id: uuid.UUID,
        receipt: SendReceipt,
        skipped: Sequence[str] = (),
        suppressed: Sequence[str] = (),
    ) -> None:
        attributes = {OUTCOME_ATTRIBUTE: "sent", PROVIDER_ATTRIBUTE: receipt.provider}
        with self._span("email.commit", **attributes):
            await self._store.mark_sent(email_id, receipt, skipped, suppressed)

    async def mark_failed(
        self, email_id: uuid.UUID, provider: str | None, detail: dict[str, Any]
    ) -> None:
        with self._span("email.commit", **{OUTCOME_ATTRIBUTE: "failed"}):
            await self._store.mark_failed(email_id, provider, detail)

    async def release_for_retry(self, email_id: uuid.UUID, detail: dict[str, Any]) -> None:
        with self._span("email.commit", **{OUTCOME_ATTRIBUTE: "retry"}):
            await self._store.release_for_retry(email_id, detail)

    async def fail_dead_lettered(self, email_id: uuid.UUID) -> DeadLetterOutcome:
        return await self._store.fail_dead_lettered(email_id)


class ProviderAttempts:
    """The provider calls of one delivery, so far: a call after a failed one is a failover."""

    def __init__(self) -> None:
        self.last_failed: str | None = None


class ObservedSender:
    """An EmailSender whose calls are spans, counted by outcome and timed."""

    def __init__(
        self, sender: EmailSender, attempts: ProviderAttempts, tracer: trace.Tracer | None = None
    ) -> None:
        self.name = sender.name
        self._sender = sender
        self._attempts = attempts
        self._tracer = tracer or trace.get_tracer(__name__)

    async def send(self, email: OutgoingEmail) -> SendReceipt:
        if self._attempts.last_failed is not None:
            FAILOVERS.labels(from_provider=self._attempts.last_failed, to_provider=self.name).inc()
        started = time.perf_counter()
        with self._tracer.start_as_current_span(
            "provider.send", attributes={PROVIDER_ATTRIBUTE: self.name}, record_exception=False
        ) as span:
            try:
                receipt = await self._sender.send(email)
            except ProviderError as error:
                outcome = send_outcome(error)
                SENDS.labels(provider=self.name, outcome=outcome.value).inc()
                span.set_attribute(OUTCOME_ATTRIBUTE, outcome.value)
                span.set_status(trace.StatusCode.ERROR, str(error))
                self._attempts.last_failed = self.name
                raise
            finally:
                PROVIDER_SECONDS.labels(provider=self.name).observe(time.perf_counter() - started)
            span.set_attribute(OUTCOME_ATTRIBUTE, SendOutcome.SENT.value)
        SENDS.labels(provider=self.name, outcome=SendOutcome.SENT.value).inc()
        return receipt


def observed_senders(
    senders: Sequence[EmailSender], tracer: trace.Tracer | None = None
) -> list[ObservedSender]:
    """The senders of one delivery (one ProviderAttempts for all of them)."""
    attempts = ProviderAttempts()
    return [ObservedSender(sender, attempts, tracer) for sender in senders]


class ObservedBreakers:
    """CircuitBreakers whose state per provider, as this processor sees it, is a gauge."""

    def __init__(self, breakers: CircuitBreakers) -> None:
        self._breakers = breakers

    async def snapshot(self) -> dict[str, BreakerState]:
        view = await self._breakers.snapshot()
        for provider, state in view.items():
            BREAKER_OPEN.labels(provider=provider).set(1 if state.open_for_seconds > 0 else 0)
            BREAKER_FAILURES.labels(provider=provider).set(state.consecutive_failures)
        return view

    async def record_success(self, provider: str) -> None:
        await self._breakers.record_success(provider)
        BREAKER_OPEN.labels(provider=provider).set(0)
        BREAKER_FAILURES.labels(provider=provider).set(0)

    async def record_failure(self, provider: str, reason: str) -> bool:
        opened = await self._breakers.record_failure(provider, reason)
        BREAKER_FAILURES.labels(provider=provider).inc()
        if opened:
            BREAKER_OPEN.labels(provider=provider).set(1)
        return opened
