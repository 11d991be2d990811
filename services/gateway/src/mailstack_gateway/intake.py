"""Accepting emails, one or a batch: validate everything at once and store them durably, queued
via the outbox (or scheduled, for a `send_at`)."""

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from pydantic import ValidationError

from mailstack_core.status import EmailStatus
from mailstack_gateway.schemas import (
    MAX_BATCH_EMAILS,
    MAX_RECIPIENTS,
    NOW,
    EmailCreate,
    FieldError,
)

log = structlog.get_logger(__name__)


class InvalidEmailError(ValueError):
    """The request is not an acceptable email; carries every problem found, each with its field."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        self.errors = list(errors)


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's `Idempotency-Key` and a hash of its request's canonical JSON."""

    key: str
    request_sha256: bytes


@dataclass(frozen=True)
class EarlierRequest:
    """The request that took an idempotency key first: its email(s) and its hash."""

    email_id: uuid.UUID
    request_sha256: bytes
    # Every email it created, in request order (a batch's); empty means just `email_id`.
    email_ids: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True)
class NewEmail:
    """An email about to be stored: its new id, its fields and its request JSON."""

    id: uuid.UUID
    email: EmailCreate
    request_body: str


@dataclass(frozen=True)
class AcceptedEmail:
    id: uuid.UUID
    status: EmailStatus


class IdempotencyKeyReusedError(ValueError):
    """The key was used before with a different request."""

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used with a different request body")


class IntakeStore(Protocol):
    async def save_queued(
        self,
        tenant_id: str,
        email_id: uuid.UUID,
        email: EmailCreate,
        request_body: str,
        idempotency: IdempotencyKey | None = None,
    ) -> EarlierRequest | None:
        """In one transaction: the email, its request body, a QUEUED history row, an outbox row
        and the idempotency key; or nothing, and the request that took the key first."""

    async def save_batch(
        self,
        tenant_id: str,
        new_emails: Sequence[NewEmail],
        idempotency: IdempotencyKey | None = None,
    ) -> EarlierRequest | None:
        """`save_queued` for every email at once, in one transaction: all of them or none."""


def status_on_acceptance(email: EmailCreate) -> EmailStatus:
    """SCHEDULED when it names a `send_at` (even one a moment ago: the scheduler queues it in
    its next round), QUEUED otherwise."""
    return EmailStatus.QUEUED if email.send_at is None else EmailStatus.SCHEDULED


def request_hash(decoded: object) -> bytes:
    """SHA-256 of the request's canonical JSON: key order and spacing do not matter."""
    canonical = json.dumps(decoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).digest()


def field_path(location: Sequence[int | str]) -> str:
    """("to", 0, "email") -> "to[0].email", the way the API names fields."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def _cross_field_errors(raw: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    if raw.get("text") is None and raw.get("html") is None:
        errors.append(FieldError(field="text", message="at least one of text or html is required"))
    counted = [raw.get(name) for name in ("to", "cc", "bcc")]
    total = sum(len(value) for value in counted if isinstance(value, list))
    if total > MAX_RECIPIENTS:
        errors.append(
            FieldError(
                field="to",
                message=(
                    f"at most {MAX_RECIPIENTS} recipients in to, cc and bcc together, got {total}"
                ),
            )
        )
    seen: set[str] = set()
    for name in ("to", "cc", "bcc"):
        value = raw.get(name)
        for index, address in enumerate(value if isinstance(value, list) else []):
            email = address.get("email") if isinstance(address, dict) else None
            if not isinstance(email, str):
                continue
            if email.lower() in seen:
                # Providers refuse a message that names one address twice (SendGrid: 400).
                errors.append(
                    FieldError(
                        field=f"{name}[{index}].email",
                        message="each address may appear once across to, cc and bcc",
                    )
                )
            seen.add(email.lower())
    return errors


def parse_email(raw: object, now: datetime | None = None) -> EmailCreate:
    """Validate a decoded JSON body, reporting every error, field-level and cross-field, at once;
    `send_at` is judged against `now` (the current time by default)."""
    if not isinstance(raw, dict):
        raise InvalidEmailError([FieldError(field="body", message="must be a JSON object")])
    errors = _cross_field_errors(raw)
    email: EmailCreate | None = None
    try:
        email = EmailCreate.model_validate(raw, context={NOW: now or datetime.now(UTC)})
    except ValidationError as error:
        errors = [
            FieldError(field=field_path(detail["loc"]), message=detail["msg"])
            for detail in error.errors(include_url=False)
        ] + errors
    if errors or email is None:
        raise InvalidEmailError(errors)
    return email


def _within(prefix: str, field: str) -> str:
    """An email's field named from the batch: ("emails[3]", "to[0].email") -> "emails[3].to[0]
    .email"; its "body" (the email itself) -> "emails[3]"."""
    return prefix if field == "body" else f"{prefix}.{field}"


def batch_size(raw: object) -> int:
    """How many emails a batch body holds, as far as it can be told; at least 1 (what the rate
    limit counts), at most the batch limit."""
    emails = raw.get("emails") if isinstance(raw, dict) else None
    count = len(emails) if isinstance(emails, list) else 1
    return max(1, min(count, MAX_BATCH_EMAILS))


def parse_batch(raw: object, now: datetime | None = None) -> list[EmailCreate]:
    """Validate a batch body `{"emails": [...]}`: every error of every email at once, named from
    the batch (`emails[3].to[0].email`); any error refuses the whole batch."""
    if not isinstance(raw, dict):
        raise InvalidEmailError([FieldError(field="body", message="must be a JSON object")])
    errors = [
        FieldError(field=name, message="Extra inputs are not permitted")
        for name in raw
        if name != "emails"
    ]
    items = raw.get("emails")
    if not isinstance(items, list):
        errors.append(
            FieldError(field="emails", message=f"must be a list of 1 to {MAX_BATCH_EMAILS} emails")
        )
        raise InvalidEmailError(errors)
    if not 1 <= len(items) <= MAX_BATCH_EMAILS:
        errors.append(
            FieldError(
                field="emails",
                message=f"must hold 1 to {MAX_BATCH_EMAILS} emails, got {len(items)}",
            )
        )
    now = now or datetime.now(UTC)
    emails: list[EmailCreate] = []
    for index, item in enumerate(items):
        try:
            emails.append(parse_email(item, now))
        except InvalidEmailError as invalid:
            errors += [
                FieldError(field=_within(f"emails[{index}]", error.field), message=error.message)
                for error in invalid.errors
            ]
    if errors:
        raise InvalidEmailError(errors)
    return emails


async def accept_email(
    tenant_id: str,
    email: EmailCreate,
    request_body: str,
    store: IntakeStore,
    idempotency: IdempotencyKey | None = None,
) -> tuple[uuid.UUID, bool]:
    """Make the email durable, owned by the tenant; from the moment this returns, it will be
    attempted. Returns its id, and whether it is a replay: the same idempotency key and request
    as an earlier call, whose email it returns instead of storing a second one."""
    email_id = uuid.uuid4()
    earlier = await store.save_queued(tenant_id, email_id, email, request_body, idempotency)
    if earlier is not None:
        assert idempotency is not None
        if earlier.request_sha256 != idempotency.request_sha256:
            raise IdempotencyKeyReusedError
        log.info("email.replayed", email_id=str(earlier.email_id), tenant=tenant_id)
        return earlier.email_id, True
    log.info("email.accepted", email_id=str(email_id), tenant=tenant_id, recipients=len(email.to))
    return email_id, False


async def accept_batch(
    tenant_id: str,
    emails: Sequence[tuple[EmailCreate, str]],
    store: IntakeStore,
    idempotency: IdempotencyKey | None = None,
) -> tuple[list[AcceptedEmail], bool]:
    """Make every email of a batch (each with its request JSON) durable at once, or none; return
    them in request order, and whether this is a replay of an earlier batch with the same key,
    whose emails it returns instead of storing new ones."""
    new_emails = [NewEmail(uuid.uuid4(), email, body) for email, body in emails]
    statuses = [status_on_acceptance(new.email) for new in new_emails]
    earlier = await store.save_batch(tenant_id, new_emails, idempotency)
    if earlier is not None:
        assert idempotency is not None
        earlier_ids = earlier.email_ids or (earlier.email_id,)
        # The same canonical JSON holds the same emails: the lengths can only differ if the key
        # was first used for another request, and then the hashes differ too.
        if earlier.request_sha256 != idempotency.request_sha256 or len(earlier_ids) != len(
            new_emails
        ):
            raise IdempotencyKeyReusedError
        log.info("batch.replayed", count=len(earlier_ids), tenant=tenant_id)
        return [AcceptedEmail(i, s) for i, s in zip(earlier_ids, statuses, strict=True)], True
    log.info(
        "batch.accepted",
        email_ids=[str(new.id) for new in new_emails],
        tenant=tenant_id,
        scheduled=statuses.count(EmailStatus.SCHEDULED),
    )
    return [AcceptedEmail(new.id, s) for new, s in zip(new_emails, statuses, strict=True)], False
