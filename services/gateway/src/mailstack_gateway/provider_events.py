"""Provider events in: read SendGrid's and ElasticEmail's events, match them to emails, record them.

Every event kind either maps to one status (DELIVERED, DEFERRED, BOUNCED with "hard" or "soft"
in the detail, COMPLAINED, OPENED, CLICKED, UNSUBSCRIBED) or is ignored. A recorded event is a
history row keyed by the provider's event id, so the same event delivered twice is one row. The
email's status moves forward only (mailstack_core.status.DELIVERY_ORDER); an event of a lower
rank, or one after a bounce or a complaint, is a history row and nothing more. A hard bounce or
a complaint puts the recipient on the tenant's suppression list in the same transaction.

An event whose email is not found (not ours, or archived) is counted and answered 2xx all the
same: a provider retries anything else for days.
"""

import enum
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from mailstack_core.outcomes import Outcome
from mailstack_core.status import EmailStatus

log = structlog.get_logger(__name__)

SENDGRID = "sendgrid"
ELASTICEMAIL = "elasticemail"
# The custom arg (SendGrid) and Postback field (ElasticEmail) the processor sends our id in.
EMAIL_ID_ARG = "mailstack_email_id"
# Our own query parameter on ElasticEmail's notification URL: never part of the event.
SECRET_PARAMETER = "secret"  # noqa: S105 - a parameter name

Bounce = Literal["hard", "soft"]
SuppressionReason = Literal["hard_bounce", "complaint"]


class MalformedEventsError(ValueError):
    """The request is not a batch of events in the provider's format."""


@dataclass(frozen=True)
class ProviderEvent:
    """One provider event, in mailstack's words, with the provider's own kept in `raw`."""

    provider: str
    event_id: str
    kind: str  # the provider's name for it (delivered, bounce, Sent, Error, ...)
    status: EmailStatus | None  # None: a kind mailstack does not track
    message_id: str | None  # the provider's message id, as the processor stored it
    email_id: uuid.UUID | None  # ours, carried back by the provider
    recipient: str | None
    raw: Mapping[str, Any]
    bounce: Bounce | None = None

    @property
    def suppression_reason(self) -> SuppressionReason | None:
        if self.status is EmailStatus.COMPLAINED:
            return "complaint"
        if self.status is EmailStatus.BOUNCED and self.bounce == "hard":
            return "hard_bounce"
        return None

    def detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "outcome": Outcome.PROVIDER_EVENT,
            "event": self.kind,
            "event_id": self.event_id,
            "recipient": self.recipient,
        }
        if self.bounce is not None:
            detail["bounce"] = self.bounce
        detail["raw"] = dict(self.raw)
        return detail


def _email_id(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


# -- SendGrid Event Webhook: a JSON array of event objects -----------------------------------

SENDGRID_STATUSES: Mapping[str, EmailStatus] = {
    "delivered": EmailStatus.DELIVERED,
    "deferred": EmailStatus.DEFERRED,
    "bounce": EmailStatus.BOUNCED,
    # Not sent at all, for a reason SendGrid keeps (bounced, invalid or unsubscribed address).
    "dropped": EmailStatus.BOUNCED,
    "spamreport": EmailStatus.COMPLAINED,
    "open": EmailStatus.OPENED,
    "click": EmailStatus.CLICKED,
    "unsubscribe": EmailStatus.UNSUBSCRIBED,
    "group_unsubscribe": EmailStatus.UNSUBSCRIBED,
}


def sendgrid_message_id(sg_message_id: str | None) -> str | None:
    """The X-Message-Id the send answered: sg_message_id is it followed by `.filter...`."""
    if not sg_message_id:
        return None
    return sg_message_id.split(".filter", 1)[0]


def _sendgrid_bounce(item: Mapping[str, Any]) -> Bounce | None:
    kind = item.get("event")
    if kind == "dropped":
        return "hard"
    if kind != "bounce":
        return None
    # `type` is "bounce" (the server refused the address) or "blocked" (refused for now).
    return "soft" if item.get("type") == "blocked" else "hard"


def _sendgrid_event_id(item: Mapping[str, Any]) -> str:
    event_id = item.get("sg_event_id")
    if isinstance(event_id, str) and event_id:
        return event_id
    return _digest(item)


def parse_sendgrid(body: bytes) -> list[ProviderEvent]:
    try:
        items = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise MalformedEventsError(f"not JSON: {error}") from error
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise MalformedEventsError("SendGrid posts a JSON array of event objects")
    events = []
    for item in items:
        kind = str(item.get("event", ""))
        events.append(
            ProviderEvent(
                provider=SENDGRID,
                event_id=_sendgrid_event_id(item),
                kind=kind,
                status=SENDGRID_STATUSES.get(kind),
                message_id=sendgrid_message_id(item.get("sg_message_id")),
                email_id=_email_id(item.get(EMAIL_ID_ARG)),
                recipient=_address(item.get("email")),
                raw=item,
                bounce=_sendgrid_bounce(item),
            )
        )
    return events


# -- ElasticEmail HTTP web notification: one event as URL parameters -------------------------

ELASTICEMAIL_STATUSES: Mapping[str, EmailStatus] = {
    # ElasticEmail's "Sent" is its delivery: the recipient's server took the message.
    "Sent": EmailStatus.DELIVERED,
    "Opened": EmailStatus.OPENED,
    "Clicked": EmailStatus.CLICKED,
    "Unsubscribed": EmailStatus.UNSUBSCRIBED,
    "AbuseReport": EmailStatus.COMPLAINED,
    "Error": EmailStatus.BOUNCED,
}
# Bounce categories that say the address itself is bad; the others may pass.
HARD_BOUNCE_CATEGORIES = frozenset({"NoMailbox", "DNSProblem"})
# Refusals for now that ElasticEmail tries again: a deferral, not a bounce.
DEFERRAL_CATEGORIES = frozenset({"GreyListed", "Throttled"})


def _digest(value: Mapping[str, Any]) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _postback_email_id(postback: str | None) -> uuid.UUID | None:
    if not postback:
        return None
    try:
        carried = json.loads(postback)
    except (json.JSONDecodeError, RecursionError):
        return _email_id(postback)
    return _email_id(carried.get(EMAIL_ID_ARG)) if isinstance(carried, dict) else None


def _address(value: object) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def parse_elasticemail(parameters: Mapping[str, str]) -> ProviderEvent:
    """One notification; ElasticEmail gives it no id, so its id is a digest of its parameters
    (a notification sent again is the same one)."""
    raw = {key: value for key, value in parameters.items() if key != SECRET_PARAMETER}
    kind = raw.get("status", "")
    if not kind:
        raise MalformedEventsError("an ElasticEmail notification has a status")
    status = ELASTICEMAIL_STATUSES.get(kind)
    category = raw.get("category", "")
    bounce: Bounce | None = None
    if status is EmailStatus.BOUNCED:
        if category in DEFERRAL_CATEGORIES:
            status = EmailStatus.DEFERRED
        else:
            bounce = "hard" if category in HARD_BOUNCE_CATEGORIES else "soft"
    return ProviderEvent(
        provider=ELASTICEMAIL,
        event_id=_digest(raw),
        kind=kind,
        status=status,
        message_id=raw.get("messageid") or None,
        email_id=_postback_email_id(raw.get("postback")),
        recipient=_address(raw.get("to")),
        raw=raw,
        bounce=bounce,
    )


# -- recording --------------------------------------------------------------------------------


class EventResult(enum.StrEnum):
    """What became of one event (the `result` label of the provider events metric)."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    UNKNOWN_EMAIL = "unknown_email"
    IGNORED = "ignored"


@dataclass(frozen=True)
class MatchedEmail:
    id: uuid.UUID
    tenant_id: str
    status: EmailStatus


class EventTransaction(Protocol):
    """One transaction of the event store: every event of a request commits together."""

    async def find_email(self, event: ProviderEvent) -> MatchedEmail | None:
        """The email `event` is about (by our id, else by the provider's message id), locked."""

    async def append(self, email_id: uuid.UUID, event: ProviderEvent) -> bool:
        """Append its history row; False if this provider's event id has one already."""

    async def move_status(self, email_id: uuid.UUID, status: EmailStatus) -> None: ...

    async def suppress(
        self,
        tenant_id: str,
        address: str,
        reason: SuppressionReason,
        event: ProviderEvent,
        email_id: uuid.UUID,
    ) -> None:
        """Add `address` to the tenant's suppression list unless it is there."""


class EventStore(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[EventTransaction]: ...


def next_status(current: EmailStatus, reported: EmailStatus) -> EmailStatus | None:
    """The email's new status after an event reporting `reported`, or None to keep it."""
    if current in (EmailStatus.SCHEDULED, EmailStatus.CANCELED) or current.is_delivery_final:
        return None
    return reported if reported.delivery_rank > current.delivery_rank else None


@dataclass
class Recorded:
    results: list[EventResult] = field(default_factory=list)

    def count(self, result: EventResult) -> int:
        return self.results.count(result)


async def record_events(events: Sequence[ProviderEvent], store: EventStore) -> Recorded:
    """Record a request's events in one transaction; the results in the events' order."""
    recorded = Recorded()
    async with store.transaction() as transaction:
        for event in events:
            recorded.results.append(await _record(event, transaction))
    return recorded


async def _record(event: ProviderEvent, transaction: EventTransaction) -> EventResult:
    bound = log.bind(provider=event.provider, event=event.kind, event_id=event.event_id)
    if event.status is None:
        bound.debug("provider_event.ignored")
        return EventResult.IGNORED
    email = await transaction.find_email(event)
    if email is None:
        bound.warning("provider_event.unknown_email", message_id=event.message_id)
        return EventResult.UNKNOWN_EMAIL
    if not await transaction.append(email.id, event):
        bound.info("provider_event.duplicate", email_id=str(email.id))
        return EventResult.DUPLICATE
    moved = next_status(email.status, event.status)
    if moved is not None:
        await transaction.move_status(email.id, moved)
    reason = event.suppression_reason
    if reason is not None and event.recipient is not None:
        await transaction.suppress(email.tenant_id, event.recipient, reason, event, email.id)
    bound.info(
        "provider_event.recorded",
        email_id=str(email.id),
        status=event.status.value,
        moved_to=moved.value if moved is not None else None,
        suppressed=reason,
    )
    return EventResult.RECORDED
