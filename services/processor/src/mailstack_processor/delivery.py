"""Delivering one email: claim it, try the providers in order, record every step, decide what next.

Failover policy (PROVIDERS.md): a transient or configuration failure falls over to the next
provider; a permanent rejection fails the email at once. A timeout is an *unknown outcome*: the
provider may have accepted the email, so falling over can deliver it twice. That window is
accepted (it is the only one), and recorded in the history as outcome "unknown".

Before any provider, every recipient is looked up in the tenant's suppression list (by the
claim's own statement): an email whose recipients are all suppressed fails ("suppressed", never
retried) and a partly suppressed one goes to the others, its SENT row naming who was dropped.
The email's attachments are then read from their store: one that is gone fails the email; a
store that does not answer is retried like a provider outage. A test-mode email (every
recipient at the sink domain) is then marked SENT by the sink, and no provider is called.
"""

import asyncio
import dataclasses
import enum
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import structlog

from mailstack_core.outcomes import Outcome
from mailstack_core.sink import SINK_PROVIDER
from mailstack_core.status import EmailStatus
from mailstack_processor.providers.base import (
    Attachment,
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
    CANCELED = "canceled"  # its sender canceled it: never to be sent
    NOT_DUE = "not_due"  # SCHEDULED: the gateway publishes a message of its own when it is due


@dataclass(frozen=True)
class AttachmentRef:
    """Where one attachment's bytes are, and what they must be (from the email's row)."""

    key: str
    filename: str
    content_type: str
    disposition: Literal["attachment", "inline"]
    content_id: str | None
    size: int
    sha256: str


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    email: OutgoingEmail | None = None
    attempt: int = 0
    lease_remaining_seconds: float = 0.0
    tenant_id: str | None = None
    # The claimed email's attachments, still to be read from their store.
    attachments: tuple[AttachmentRef, ...] = ()
    # Which of its recipients (lower-case) its tenant suppressed, read as it was claimed.
    suppressed: frozenset[str] = frozenset()


class AttachmentMissingError(Exception):
    """An attachment is not in its store (expired or never stored), or not what was stored."""


class AttachmentStoreUnavailableError(Exception):
    """The attachment store did not answer: transient, like a provider outage."""


class AttachmentSource(Protocol):
    async def fetch(self, key: str) -> bytes:
        """The bytes under `key`; AttachmentMissingError or AttachmentStoreUnavailableError."""


class DeadLetterOutcome(enum.Enum):
    FAILED = "failed"  # the email was still open: now FAILED with its last reason
    FINAL = "final"  # already SENT, FAILED or CANCELED: nothing to do
    NOT_DUE = "not_due"  # SCHEDULED: this stray message is not the one that will send it
    BUSY = "busy"  # a live claim is delivering it right now: look again later
    MISSING = "missing"  # no such email: a poison message


class DeliveryStore(Protocol):
    async def claim(self, email_id: uuid.UUID, lease_seconds: int, receive_count: int) -> Claim:
        """Atomically move QUEUED (or PROCESSING with a lapsed lease) to PROCESSING; never a
        SCHEDULED or CANCELED email. A claimed email comes with which of its recipients its
        tenant suppressed, in the same round trip."""

    async def record_failed_attempt(
        self, email_id: uuid.UUID, provider: str, detail: dict[str, Any]
    ) -> None:
        """Append FAILED(provider) for one provider's failed attempt; the email stays PROCESSING."""

    async def mark_sent(
        self,
        email_id: uuid.UUID,
        receipt: SendReceipt,
        skipped: Sequence[str] = (),
        suppressed: Sequence[str] = (),
    ) -> None:
        """SENT(provider) with its ids; `skipped` names providers passed over (circuit open),
        `suppressed` the recipients it was not sent to."""

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
    # Deleted without sending: the email was canceled, or is not due yet (`status` says which).
    dropped: bool = False


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


async def load_attachments(
    refs: Sequence[AttachmentRef], source: AttachmentSource
) -> tuple[Attachment, ...]:
    """Every attachment's bytes, checked against the SHA-256 the gateway recorded."""
    contents = await asyncio.gather(*(source.fetch(ref.key) for ref in refs))
    loaded = []
    for ref, content in zip(refs, contents, strict=True):
        if hashlib.sha256(content).hexdigest() != ref.sha256:
            raise AttachmentMissingError(f"{ref.key} does not hold the bytes that were stored")
        loaded.append(
            Attachment(
                filename=ref.filename,
                content=content,
                content_type=ref.content_type,
                disposition=ref.disposition,
                content_id=ref.content_id,
            )
        )
    return tuple(loaded)


async def deliver(
    email_id: uuid.UUID,
    receive_count: int,
    store: DeliveryStore,
    senders: Sequence[EmailSender],
    policy: RetryPolicy,
    lease_seconds: int,
    breakers: CircuitBreakers | None = None,
    attachments: AttachmentSource | None = None,
) -> Disposition:
    claim = await store.claim(email_id, lease_seconds, receive_count)
    bound = log.bind(email_id=str(email_id), receive_count=receive_count)
    if claim.state is ClaimState.MISSING:
        bound.error("delivery.unknown_email")
        return Disposition(Action.RETRY, policy.poison_backoff_seconds)
    if claim.state is ClaimState.FINAL:
        bound.info("delivery.already_final")
        return Disposition(Action.DELETE)
    if claim.state is ClaimState.CANCELED:
        bound.info("delivery.canceled_dropped")
        return Disposition(Action.DELETE, status=EmailStatus.CANCELED, dropped=True)
    if claim.state is ClaimState.NOT_DUE:
        bound.warning("delivery.not_due_dropped")
        return Disposition(Action.DELETE, status=EmailStatus.SCHEDULED, dropped=True)
    if claim.state is ClaimState.BUSY:
        bound.info("delivery.claimed_elsewhere")
        return Disposition(Action.RETRY, int(claim.lease_remaining_seconds + 1))
    assert claim.email is not None
    email = claim.email
    if suppressed := claim.suppressed:
        remaining = email.without_recipients(suppressed)
        if remaining is None:
            detail = {
                "outcome": Outcome.SUPPRESSED,
                "suppressed": sorted(suppressed),
                "attempt": claim.attempt,
            }
            await store.mark_failed(email_id, None, detail)
            bound.warning("delivery.suppressed", recipients=len(suppressed))
            return Disposition(Action.DELETE, status=EmailStatus.FAILED)
        bound.info("delivery.recipients_suppressed", dropped=len(suppressed))
        email = remaining
    dropped = sorted(suppressed)
    if claim.attachments:
        assert attachments is not None, "an email with attachments needs an attachment source"
        loaded = await _attach(email, claim, attachments, receive_count, store, policy, bound)
        if isinstance(loaded, Disposition):
            return loaded
        email = loaded

    if email.is_test_mode:
        receipt = SendReceipt(SINK_PROVIDER, message_id=f"sink-{email_id}", test_mode=True)
        await store.mark_sent(email_id, receipt, suppressed=dropped)
        bound.info("delivery.sent", provider=SINK_PROVIDER, test_mode=True)
        return Disposition(Action.DELETE, status=EmailStatus.SENT)

    circuits = await breakers.snapshot() if breakers is not None else {}
    skipped = [s.name for s in senders if _is_open(circuits, s.name)]
    # An open circuit skips a provider only while another one is worth trying.
    candidates = [s for s in senders if s.name not in skipped] or list(senders)
    if len(candidates) == len(senders):
        skipped = []
    last_error: ProviderError | None = None
    for sender in candidates:
        try:
            receipt = await sender.send(email)
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
        await store.mark_sent(email_id, receipt, skipped, dropped)
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
    return await _retry_later(email_id, receive_count, store, policy, summary, bound, last_error)


async def _attach(
    email: OutgoingEmail,
    claim: Claim,
    source: AttachmentSource,
    receive_count: int,
    store: DeliveryStore,
    policy: RetryPolicy,
    bound: Any,
) -> OutgoingEmail | Disposition:
    """`email` with its attachments' bytes, or what to do when they cannot be read."""
    email_id = email.id
    try:
        loaded = await load_attachments(claim.attachments, source)
    except AttachmentMissingError as error:
        detail = {
            "outcome": Outcome.ATTACHMENT_MISSING,
            "error": str(error),
            "attempt": claim.attempt,
        }
        await store.mark_failed(email_id, None, detail)
        bound.error("delivery.attachment_missing", error=str(error))
        return Disposition(Action.DELETE, status=EmailStatus.FAILED)
    except AttachmentStoreUnavailableError as error:
        bound.warning("delivery.attachments_unavailable", error=str(error))
        summary = {"last_error": f"attachments: {error}", "attempt": claim.attempt}
        return await _retry_later(email_id, receive_count, store, policy, summary, bound)
    return dataclasses.replace(email, attachments=loaded)


async def _retry_later(
    email_id: uuid.UUID,
    receive_count: int,
    store: DeliveryStore,
    policy: RetryPolicy,
    summary: dict[str, Any],
    bound: Any,
    last_error: ProviderError | None = None,
) -> Disposition:
    """A transient failure (the last provider's, or the attachment store's): back to QUEUED for
    the message's redelivery, or FAILED after the last attempt (then dead-lettered)."""
    if receive_count >= policy.max_attempts:
        provider = last_error.provider if last_error is not None else None
        await store.mark_failed(email_id, provider, {**summary, "outcome": Outcome.OUT_OF_ATTEMPTS})
        bound.error("delivery.gave_up", error=summary["last_error"])
        return Disposition(Action.DEAD_LETTER, status=EmailStatus.FAILED)
    hint = last_error.retry_after_seconds if last_error is not None else None
    delay = policy.backoff(receive_count, hint)
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
