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

from mailstack_core.sink import SINK_DOMAIN, is_sink_address
from mailstack_core.status import EmailStatus
from mailstack_gateway.schemas import (
    MAX_ATTACHMENT_BYTES,
    MAX_BATCH_EMAILS,
    MAX_METADATA_BYTES,
    MAX_RECIPIENTS,
    NOW,
    AttachmentCreate,
    EmailCreate,
    FieldError,
    base64_decoded_size,
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
class RequestInFlight:
    """The request that claimed an idempotency key is still being handled (its emails have not
    committed yet): its hash."""

    request_sha256: bytes


@dataclass(frozen=True)
class StoredAttachment:
    """An attachment as the email's row describes it: where its bytes are, and what they are."""

    key: str
    filename: str
    content_type: str
    disposition: str
    content_id: str | None
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "filename": self.filename,
            "content_type": self.content_type,
            "disposition": self.disposition,
            "content_id": self.content_id,
            "size": self.size,
            "sha256": self.sha256,
        }


class AttachmentStorageUnavailableError(RuntimeError):
    """The attachments could not be stored; nothing was accepted."""


class AttachmentStore(Protocol):
    async def put(self, email_id: uuid.UUID, attachments: Sequence[AttachmentCreate]) -> list[str]:
        """Store each attachment's bytes under the email's id; return their keys, in order.
        Raise AttachmentStorageUnavailableError when they cannot be stored."""


@dataclass(frozen=True)
class NewEmail:
    """An email about to be stored: its new id, its fields and its request JSON."""

    id: uuid.UUID
    email: EmailCreate
    request_body: str
    attachments: Sequence[StoredAttachment] = ()


@dataclass(frozen=True)
class AcceptedEmail:
    id: uuid.UUID
    status: EmailStatus


class IdempotencyKeyReusedError(ValueError):
    """The key was used before with a different request."""

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used with a different request body")


class IdempotencyKeyInFlightError(RuntimeError):
    """The same request, with the same key, is still being handled: retry once it is done."""

    # What the 409 answers in Retry-After: most requests are done well within a second.
    retry_after_seconds = 1

    def __init__(self) -> None:
        super().__init__(
            "a request with this Idempotency-Key is still being handled; retry after it completes"
        )


Earlier = EarlierRequest | RequestInFlight


class IntakeStore(Protocol):
    async def claim_key(
        self, tenant_id: str, idempotency: IdempotencyKey, email_ids: Sequence[uuid.UUID]
    ) -> Earlier | None:
        """Take the key for a request that will store `email_ids` (committed at once, before
        anything else is done, so a duplicate sees it in flight); or nothing, and the request
        that holds it: done, or still in flight. An unfinished claim expires after a short
        lease (a crashed gateway's), a finished key after 24 h."""

    async def release_key(
        self, tenant_id: str, idempotency: IdempotencyKey, email_ids: Sequence[uuid.UUID]
    ) -> None:
        """Drop the claim made for `email_ids` if it is still unfinished: the request failed."""

    async def save_batch(
        self,
        tenant_id: str,
        new_emails: Sequence[NewEmail],
        idempotency: IdempotencyKey | None = None,
    ) -> Earlier | None:
        """In one transaction, for every email: the email, its request body, a QUEUED (or
        SCHEDULED) history row and, if QUEUED, an outbox row; with a key, the key's claim is
        completed in the same transaction. All of them or none: nothing is stored when the claim
        is no longer this request's, and the request that holds the key is returned."""


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
        if part == "[key]":
            continue  # a mapping's key failed: the path already ends with that key
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def _cross_field_errors(raw: dict[str, Any]) -> list[FieldError]:
    errors = _recipient_errors(raw)
    errors += _attachment_errors(raw.get("attachments"))
    errors += _tag_errors(raw.get("tags"))
    errors += _header_errors(raw.get("headers"))
    metadata = raw.get("metadata")
    if isinstance(metadata, dict):
        size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_METADATA_BYTES:
            errors.append(
                FieldError(
                    field="metadata",
                    message=f"at most {MAX_METADATA_BYTES} bytes as JSON, got {size}",
                )
            )
    return errors


def _recipient_errors(raw: dict[str, Any]) -> list[FieldError]:
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
    return errors + _test_mode_errors(raw)


def _recipients(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, address) of every recipient given as a string, in to, cc, bcc order."""
    found: list[tuple[str, str]] = []
    for name in ("to", "cc", "bcc"):
        value = raw.get(name)
        for index, address in enumerate(value if isinstance(value, list) else []):
            email = address.get("email") if isinstance(address, dict) else None
            if isinstance(email, str):
                found.append((f"{name}[{index}].email", email))
    return found


def _test_mode_errors(raw: dict[str, Any]) -> list[FieldError]:
    """Test mode is all or nothing: a real recipient must never ride along with sink ones."""
    recipients = _recipients(raw)
    if not any(is_sink_address(email) for _, email in recipients):
        return []
    return [
        FieldError(
            field=field,
            message=(
                f"an email to {SINK_DOMAIN} (test mode) is never sent, so every recipient must "
                "be there; send to real recipients in another email"
            ),
        )
        for field, email in recipients
        if not is_sink_address(email)
    ]


def _attachment_errors(attachments: object) -> list[FieldError]:
    """What no single attachment shows: their total size, and how Content-IDs are used."""
    if not isinstance(attachments, list):
        return []
    errors: list[FieldError] = []
    total = 0
    content_ids: set[str] = set()
    for index, attachment in enumerate(attachments):
        if not isinstance(attachment, dict):
            continue
        path = f"attachments[{index}]"
        content = attachment.get("content")
        if isinstance(content, str):
            total += base64_decoded_size(content)
            if total > MAX_ATTACHMENT_BYTES:
                errors.append(
                    FieldError(
                        field=f"{path}.content",
                        message=(
                            f"attachments may hold at most {MAX_ATTACHMENT_BYTES} bytes "
                            f"together (decoded); with this one they hold {total}"
                        ),
                    )
                )
        content_id = attachment.get("content_id")
        inline = attachment.get("disposition") == "inline"
        if inline and content_id is None:
            errors.append(
                FieldError(
                    field=f"{path}.content_id",
                    message="required for an inline attachment (the HTML refers to it by cid:)",
                )
            )
        elif content_id is not None and not inline:
            errors.append(
                FieldError(
                    field=f"{path}.content_id",
                    message='only for an attachment whose disposition is "inline"',
                )
            )
        if isinstance(content_id, str):
            if content_id in content_ids:
                errors.append(
                    FieldError(field=f"{path}.content_id", message="each content_id only once")
                )
            content_ids.add(content_id)
    return errors


def _tag_errors(tags: object) -> list[FieldError]:
    if not isinstance(tags, list):
        return []
    errors: list[FieldError] = []
    seen: set[object] = set()
    for index, tag in enumerate(tags):
        if isinstance(tag, str) and tag in seen:
            errors.append(FieldError(field=f"tags[{index}]", message="each tag only once"))
        seen.add(tag)
    return errors


def _header_errors(headers: object) -> list[FieldError]:
    if not isinstance(headers, dict):
        return []
    errors: list[FieldError] = []
    seen: set[str] = set()
    for name in headers:
        if name.lower() in seen:
            errors.append(
                FieldError(
                    field=f"headers.{name}",
                    message="each header only once (names are compared without case)",
                )
            )
        seen.add(name.lower())
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


def audit_record(request_text: str, decoded: dict[str, Any], email: EmailCreate) -> str:
    """The request as kept for audit: as sent, but each attachment's bytes replaced by its size
    and SHA-256 (the bytes live in S3 until the email is sent, then expire)."""
    if not email.attachments:
        return request_text
    described = [
        {key: value for key, value in raw.items() if key != "content"}
        | {"size": attachment.size, "sha256": attachment.sha256}
        for raw, attachment in zip(decoded["attachments"], email.attachments, strict=True)
    ]
    return json.dumps(decoded | {"attachments": described}, ensure_ascii=False)


async def _store_attachments(
    email_id: uuid.UUID, email: EmailCreate, attachments: AttachmentStore
) -> list[StoredAttachment]:
    if not email.attachments:
        return []
    keys = await attachments.put(email_id, email.attachments)
    return [
        StoredAttachment(
            key=key,
            filename=attachment.filename,
            content_type=attachment.content_type,
            disposition=attachment.disposition,
            content_id=attachment.content_id,
            size=attachment.size,
            sha256=attachment.sha256,
        )
        for key, attachment in zip(keys, email.attachments, strict=True)
    ]


def _earlier_ids(earlier: Earlier, idempotency: IdempotencyKey, count: int) -> list[uuid.UUID]:
    """The ids of the emails the request that holds the key stored, to answer again; raises
    when its answer cannot be this request's (another body: 422; not done yet: 409)."""
    if earlier.request_sha256 != idempotency.request_sha256:
        raise IdempotencyKeyReusedError
    if isinstance(earlier, RequestInFlight):
        raise IdempotencyKeyInFlightError
    ids = earlier.email_ids or (earlier.email_id,)
    # The same canonical JSON holds the same emails: the counts can only differ if the key was
    # first used for another request, and then the hashes differ too.
    if len(ids) != count:
        raise IdempotencyKeyReusedError
    return list(ids)


async def _accept(
    tenant_id: str,
    emails: Sequence[tuple[EmailCreate, str]],
    store: IntakeStore,
    idempotency: IdempotencyKey | None,
    attachments: AttachmentStore,
) -> tuple[list[uuid.UUID], bool]:
    """Store the emails (each with its request JSON) in one transaction; return their ids in
    request order, and whether they are a replay (another request's, with the same key).

    A key is claimed first, in its own statement: from then on a duplicate is told that this
    request is in flight (409) rather than storing a second email, and it does not upload its
    attachments either. The email's transaction completes the claim. A request that fails
    releases its claim, so the client's retry is not told to wait for it."""
    email_ids = [uuid.uuid4() for _ in emails]
    if idempotency is not None:
        earlier = await store.claim_key(tenant_id, idempotency, email_ids)
        if earlier is not None:
            return _earlier_ids(earlier, idempotency, len(emails)), True
    try:
        new_emails = [
            NewEmail(email_id, email, body, await _store_attachments(email_id, email, attachments))
            for email_id, (email, body) in zip(email_ids, emails, strict=True)
        ]
        earlier = await store.save_batch(tenant_id, new_emails, idempotency)
    except Exception:
        if idempotency is not None:
            await _release(store, tenant_id, idempotency, email_ids)
        raise
    if earlier is not None:
        assert idempotency is not None
        # The claim lapsed while this request took longer than its lease, and was taken again.
        return _earlier_ids(earlier, idempotency, len(emails)), True
    return email_ids, False


async def _release(
    store: IntakeStore,
    tenant_id: str,
    idempotency: IdempotencyKey,
    email_ids: Sequence[uuid.UUID],
) -> None:
    """Best effort: if the claim cannot be dropped (the database is what failed), it lapses."""
    try:
        await store.release_key(tenant_id, idempotency, email_ids)
    except Exception as error:
        log.warning("idempotency.release_failed", error=type(error).__name__)


async def accept_email(
    tenant_id: str,
    email: EmailCreate,
    request_body: str,
    store: IntakeStore,
    idempotency: IdempotencyKey | None = None,
    *,
    attachments: AttachmentStore,
) -> tuple[uuid.UUID, bool]:
    """Make the email durable, owned by the tenant; from the moment this returns, it will be
    attempted. Returns its id, and whether it is a replay: the same idempotency key and request
    as an earlier call, whose email it returns instead of storing a second one. Raises
    IdempotencyKeyInFlightError while that earlier call is still being handled.

    Attachments are stored first, under the new id: a committed email always has them. If the
    email then does not commit (an error, a lapsed claim), they are orphans that the bucket's
    lifecycle rule deletes."""
    [email_id], replayed = await _accept(
        tenant_id, [(email, request_body)], store, idempotency, attachments
    )
    if replayed:
        log.info("email.replayed", email_id=str(email_id), tenant=tenant_id)
    else:
        log.info(
            "email.accepted",
            email_id=str(email_id),
            tenant=tenant_id,
            recipients=len(email.to),
            attachments=len(email.attachments),
        )
    return email_id, replayed


async def accept_batch(
    tenant_id: str,
    emails: Sequence[tuple[EmailCreate, str]],
    store: IntakeStore,
    idempotency: IdempotencyKey | None = None,
    *,
    attachments: AttachmentStore,
) -> tuple[list[AcceptedEmail], bool]:
    """Make every email of a batch (each with its request JSON) durable at once, or none; return
    them in request order, and whether this is a replay of an earlier batch with the same key,
    whose emails it returns instead of storing new ones. Attachments are stored first, and the
    key claimed before them, as for one email (`accept_email`)."""
    email_ids, replayed = await _accept(tenant_id, emails, store, idempotency, attachments)
    statuses = [status_on_acceptance(email) for email, _ in emails]
    if replayed:
        log.info("batch.replayed", count=len(email_ids), tenant=tenant_id)
    else:
        log.info(
            "batch.accepted",
            email_ids=[str(email_id) for email_id in email_ids],
            tenant=tenant_id,
            scheduled=statuses.count(EmailStatus.SCHEDULED),
        )
    return [AcceptedEmail(i, s) for i, s in zip(email_ids, statuses, strict=True)], replayed
