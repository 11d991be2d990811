"""Canceling an email: possible while it is SCHEDULED or QUEUED, before a processor claims it."""

import uuid
from dataclasses import dataclass
from typing import Protocol

import structlog

from mailstack_core.status import EmailStatus

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Cancellation:
    """What a cancel found: the email's status when it was locked, and whether it is canceled."""

    previous_status: EmailStatus
    canceled: bool


class EmailNotFoundError(LookupError):
    """The tenant has no email with this id."""

    def __init__(self, email_id: uuid.UUID) -> None:
        super().__init__(f"no email with id {email_id}")


class EmailNotCancelableError(Exception):
    """The email was claimed by a processor, or is final: it can no longer be canceled."""

    def __init__(self, email_id: uuid.UUID, status: EmailStatus) -> None:
        super().__init__(
            f"email {email_id} is {status.value}: only a SCHEDULED or QUEUED email, not yet "
            "claimed by a processor, can be canceled"
        )
        self.status = status


class CancelStore(Protocol):
    async def cancel(self, tenant_id: str, email_id: uuid.UUID) -> Cancellation | None:
        """In one transaction, under the email's row lock: CANCELED with its history row, if it
        is SCHEDULED or QUEUED; None when the tenant has no such email."""


async def cancel_email(tenant_id: str, email_id: uuid.UUID, store: CancelStore) -> None:
    """Cancel the email, or say why not. A processor that receives its message drops it."""
    found = await store.cancel(tenant_id, email_id)
    if found is None:
        raise EmailNotFoundError(email_id)
    if not found.canceled:
        raise EmailNotCancelableError(email_id, found.previous_status)
    log.info(
        "email.canceled",
        email_id=str(email_id),
        tenant=tenant_id,
        previous_status=found.previous_status.value,
    )
