"""Delivering one email: claim it, try the providers in order, record every step, decide what next.

Failover policy (PROVIDERS.md): a transient or configuration failure falls over to the next
provider; a permanent rejection fails the email at once. A timeout is an *unknown outcome*: the
provider may have accepted the email, so falling over can deliver it twice. That window is
accepted (it is the only one), and recorded in the history as outcome "unknown".
"""

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from mailstack_core.outcomes import Outcome
from mailstack_core.status import EmailStatus
from mailstack_processor.providers.base import (
    EmailSender,
    OutgoingEmail,
    ProviderError,
    ProviderMisconfiguredError,
    ProviderRejectedError,
    SendReceipt,
)

log = structlog.get_logger(__name__)


class ClaimState(enum.Enum):
    CLAIMED = "claimed"
    MISSING = "missing"  # no such email: a poison message
    FINAL = "final"  # already SENT or FAILED: a redelivery, nothing to do
    BUSY = "busy"  # another processor holds a live claim


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    email: OutgoingEmail | None = None
    attempt: int = 0
    lease_remaining_seconds: float = 0.0
    tenant_id: str | None = None


class DeadLetterOutcome(enum.Enum):
    FAILED = "failed"  # the email was still open: now FAILED with its last reason
    FINAL = "final"  # already SENT or FAILED: nothing to do
    BUSY = "busy"  # a live claim is delivering it right now: look again later
    MISSING = "missing"  # no such email: a poison message


class DeliveryStore(Protocol):
    async def claim(self, email_id: uuid.UUID, lease_seconds: int, receive_count: int) -> Claim:
        """Atomically move QUEUED (or PROCESSING with a lapsed lease) to PROCESSING."""

    async def record_failed_attempt(
        self, email_id: uuid.UUID, provider: str, detail: dict[str, Any]
    ) -> None:
        """Append FAILED(provider) for one provider's failed attempt; the email stays PROCESSING."""

    async def mark_sent(
        self, email_id: uuid.UUID, receipt: SendReceipt, skipped: Sequence[str] = ()
    ) -> None:
        """SENT(provider) with its ids; `skipped` names providers passed over (circuit open)."""

    async def mark_failed(
        self, email_id: uuid.UUID, provider: str | None, detail: dict[str, Any]
    ) -> None: ...

    async def release_for_retry(self, email_id: uuid.UUID, detail: dict[str, Any]) -> None:
        """PROCESSING -> QUEUED, waiting for the message's redelivery."""

    async def fail_dead_lettered(self, email_id: uuid.UUID) -> DeadLetterOutcome:
        """QUEUED, or PROCESSING with a lapsed claim -> FAILED ("dead_lettered")."""


@dataclass(frozen=True)
class BreakerState:
    consecutive_failures: int
    open_for_seconds: float  # > 0 while the provider is skipped


class CircuitBreakers(Protocol):
    """Per-provider breakers shared by every processor instance (see PROVIDERS.md)."""

    async def snapshot(self) -> dict[str, BreakerState]: ...

    async def record_success(self, provider: str) -> None: ...

    async def record_failure(self, provider: str, reason: str) -> bool:
        """Count a transient or configuration failure; True when the breaker is now open."""


class Action(enum.Enum):
    DELETE = "delete"  # the outcome is committed; the message is done
    RETRY = "retry"  # make the message visible again after `delay_seconds`
    DEAD_LETTER = "dead_letter"  # leave it to the queue's redrive policy


@dataclass(frozen=True)
class Disposition:
    action: Action
    delay_seconds: int = 0
    status: EmailStatus | None = None


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_base_seconds: float
    backoff_max_seconds: float
    poison_backoff_seconds: int

    def backoff(self, receive_count: int, hint: float | None = None) -> int:
        delay = self.backoff_base_seconds * 2 ** max(0, receive_count - 1)
        if hint is not None:
            delay = max(delay, hint)
        return int(min(delay, self.backoff_max_seconds) + 0.999)


def attempt_detail(error: ProviderError, attempt: int) -> dict[str, Any]:
    return {
        "outcome": Outcome.UNKNOWN if error.outcome_unknown else Outcome.FAILED,
        "class": error.kind,
        "error": error.reason,
        "http_status": error.http_status,
        "attempt": attempt,
    }


async def deliver(
    email_id: uuid.UUID,
    receive_count: int,
    store: DeliveryStore,
    senders: Sequence[EmailSender],
    policy: RetryPolicy,
    lease_seconds: int,
    breakers: CircuitBreakers | None = None,
) -> Disposition:
    claim = await store.claim(email_id, lease_seconds, receive_count)
    bound = log.bind(email_id=str(email_id), receive_count=receive_count)
    if claim.state is ClaimState.MISSING:
        bound.error("delivery.unknown_email")
        return Disposition(Action.RETRY, policy.poison_backoff_seconds)
    if claim.state is ClaimState.FINAL:
        bound.info("delivery.already_final")
        return Disposition(Action.DELETE)
    if claim.state is ClaimState.BUSY:
        bound.info("delivery.claimed_elsewhere")
        return Disposition(Action.RETRY, int(claim.lease_remaining_seconds + 1))
    assert claim.email is not None

    circuits = await breakers.snapshot() if breakers is not None else {}
    skipped = [s.name for s in senders if _is_open(circuits, s.name)]
    # An open circuit skips a provider only while another one is worth trying.
    candidates = [s for s in senders if s.name not in skipped] or list(senders)
    if len(candidates) == len(senders):
        skipped = []
    last_error: ProviderError | None = None
    for sender in candidates:
        try:
            receipt = await sender.send(claim.email)
        except ProviderRejectedError as error:
            detail = {**attempt_detail(error, claim.attempt), "outcome": Outcome.REJECTED}
            await store.mark_failed(email_id, error.provider, detail)
            bound.warning("delivery.rejected", provider=error.provider, error=error.reason)
            return Disposition(Action.DELETE, status=EmailStatus.FAILED)
        except ProviderError as error:
            last_error = error
            if breakers is not None and await breakers.record_failure(sender.name, str(error)):
                bound.error("breaker.open", provider=sender.name, error=str(error))
            await store.record_failed_attempt(
                email_id, error.provider, attempt_detail(error, claim.attempt)
            )
            level = "error" if isinstance(error, ProviderMisconfiguredError) else "warning"
            getattr(bound, level)(
                "delivery.provider_failed",
                provider=error.provider,
                kind=error.kind,
                http_status=error.http_status,
                outcome_unknown=error.outcome_unknown,
                error=error.reason,
            )
            continue
        await store.mark_sent(email_id, receipt, skipped)
        if breakers is not None and _has_failures(circuits, sender.name):
            await breakers.record_success(sender.name)
        bound.info(
            "delivery.sent",
            provider=receipt.provider,
            message_id=receipt.message_id,
            skipped=skipped,
        )
        return Disposition(Action.DELETE, status=EmailStatus.SENT)

    assert last_error is not None, "at least one provider is configured"
    summary = {"last_error": str(last_error), "attempt": claim.attempt}
    if receive_count >= policy.max_attempts:
        await store.mark_failed(
            email_id, last_error.provider, {**summary, "outcome": Outcome.OUT_OF_ATTEMPTS}
        )
        bound.error("delivery.gave_up", error=str(last_error))
        return Disposition(Action.DEAD_LETTER, status=EmailStatus.FAILED)
    delay = policy.backoff(receive_count, last_error.retry_after_seconds)
    await store.release_for_retry(
        email_id, {**summary, "outcome": Outcome.RETRY_SCHEDULED, "retry_in_seconds": delay}
    )
    return Disposition(Action.RETRY, delay, status=EmailStatus.QUEUED)


def _has_failures(circuits: dict[str, BreakerState], provider: str) -> bool:
    state = circuits.get(provider)
    return state is not None and state.consecutive_failures > 0


def _is_open(circuits: dict[str, BreakerState], provider: str) -> bool:
    state = circuits.get(provider)
    return state is not None and state.open_for_seconds > 0


async def settle_dead_letter(email_id: uuid.UUID, store: DeliveryStore) -> DeadLetterOutcome:
    """A message for this email reached the DLQ: the email must not stay open without one."""
    outcome = await store.fail_dead_lettered(email_id)
    log.bind(email_id=str(email_id)).log(
        40 if outcome is DeadLetterOutcome.FAILED else 20,
        "delivery.dead_lettered",
        outcome=outcome.value,
    )
    return outcome
