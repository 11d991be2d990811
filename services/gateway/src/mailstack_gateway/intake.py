"""Accepting an email: validate everything at once and store it durably, queued via the outbox."""

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from pydantic import ValidationError

from mailstack_gateway.schemas import MAX_RECIPIENTS, EmailCreate, FieldError

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
    """The request that took an idempotency key first: its email and its hash."""

    email_id: uuid.UUID
    request_sha256: bytes


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


def parse_email(raw: object) -> EmailCreate:
    """Validate a decoded JSON body, reporting every error, field-level and cross-field, at once."""
    if not isinstance(raw, dict):
        raise InvalidEmailError([FieldError(field="body", message="must be a JSON object")])
    errors = _cross_field_errors(raw)
    email: EmailCreate | None = None
    try:
        email = EmailCreate.model_validate(raw)
    except ValidationError as error:
        errors = [
            FieldError(field=field_path(detail["loc"]), message=detail["msg"])
            for detail in error.errors(include_url=False)
        ] + errors
    if errors or email is None:
        raise InvalidEmailError(errors)
    return email


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
