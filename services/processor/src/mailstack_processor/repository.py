"""All of the processor's SQL: claiming an email and recording every change of its state."""

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Integer,
    Text,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailstack_core.outcomes import Outcome
from mailstack_core.sink import SINK_DOMAIN
from mailstack_core.status import DELIVERY_ORDER, EmailStatus
from mailstack_core.tables import email_history, emails, provider_breakers, suppressions
from mailstack_processor.delivery import (
    AttachmentRef,
    BreakerState,
    Claim,
    ClaimState,
    DeadLetterOutcome,
)
from mailstack_processor.providers.base import Mailbox, OutgoingEmail, SendReceipt


def _seconds(seconds: Any) -> Any:
    return func.make_interval(0, 0, 0, 0, 0, 0, seconds)


def _mailbox(value: dict[str, Any]) -> Mailbox:
    return Mailbox(email=value["email"], name=value.get("name"))


def _attachment(value: dict[str, Any]) -> AttachmentRef:
    return AttachmentRef(
        key=value["key"],
        filename=value["filename"],
        content_type=value["content_type"],
        disposition=value["disposition"],
        content_id=value.get("content_id"),
        size=int(value["size"]),
        sha256=value["sha256"],
    )


async def _append(
    connection: AsyncConnection,
    email_id: uuid.UUID,
    status: EmailStatus,
    provider: str | None,
    detail: dict[str, Any],
) -> None:
    await connection.execute(
        insert(email_history).values(
            email_id=email_id, status=status, provider=provider, detail=detail
        )
    )


# What delivery reads of an email: not the stored request body, which can be large.
_OUTGOING_COLUMNS = (
    emails.c.sender_email,
    emails.c.sender_name,
    emails.c.to_recipients,
    emails.c.cc_recipients,
    emails.c.bcc_recipients,
    emails.c.reply_to,
    emails.c.subject,
    emails.c.text_body,
    emails.c.html_body,
    emails.c.headers,
    emails.c.tags,
    emails.c.metadata,
    emails.c.attachments,
)
_RECLAIMED_DETAIL = {"reclaimed": True, "previous_attempt_outcome": "unknown"}


def _build_claim() -> Any:
    """Lock, claim and append PROCESSING to the history in one statement (one round trip).

    The row lock of `target` serialises concurrent claims; the UPDATE re-checks its condition
    against the row the lock returned, so exactly one of them moves it to PROCESSING. Built
    once: constructing a statement costs more CPU than running it."""
    target = (
        select(
            emails.c.id,
            emails.c.status,
            emails.c.tenant_id,
            (emails.c.lease_expires_at < func.now()).label("lease_lapsed"),
            func.extract("epoch", emails.c.lease_expires_at - func.now()).label("lease_remaining"),
        )
        .where(emails.c.id == bindparam("email_id"))
        .with_for_update()
        .cte("target")
    )
    reclaimed = target.c.status == EmailStatus.PROCESSING
    claimed = (
        update(emails)
        .where(
            emails.c.id == target.c.id,
            or_(target.c.status == EmailStatus.QUEUED, and_(reclaimed, target.c.lease_lapsed)),
        )
        .values(
            status=EmailStatus.PROCESSING,
            attempts=emails.c.attempts + 1,
            lease_expires_at=func.now() + _seconds(bindparam("lease_seconds")),
            updated_at=func.now(),
        )
        .returning(emails.c.id, emails.c.attempts, reclaimed.label("reclaimed"), *_OUTGOING_COLUMNS)
        .cte("claimed")
    )
    detail = func.jsonb_build_object(
        "attempt", claimed.c.attempts, "receive_count", bindparam("receive_count", type_=Integer)
    ).op("||")(
        case(
            (claimed.c.reclaimed, literal(_RECLAIMED_DETAIL, JSONB)),
            else_=literal({}, JSONB),
        )
    )
    history = insert(email_history).from_select(
        ["email_id", "status", "provider", "detail"],
        select(claimed.c.id, literal(EmailStatus.PROCESSING.value), null(), detail),
    )
    return (
        select(
            target.c.status.label("previous_status"),
            target.c.lease_remaining,
            target.c.tenant_id,
            claimed.c.attempts,
            *(claimed.c[column.name] for column in _OUTGOING_COLUMNS),
        )
        .select_from(target.outerjoin(claimed, true()))
        .add_cte(history.cte("history"))
    )


def _build_change(status: EmailStatus, *columns: str) -> Any:
    """Set the email's status and `columns`, and append its history row, in one statement.

    Parameters: email_id, history_provider, history_detail, and set_<column> per column (none
    named like a column of `emails`, which SQLAlchemy would add to the SET clause)."""
    changed = (
        update(emails)
        .where(emails.c.id == bindparam("email_id"))
        .values(
            # A provider's event may have come first (its webhook can beat this write): the
            # status it set stays, as the status only moves forward (see DELIVERY_ORDER).
            status=case(
                (emails.c.status.in_([s.value for s in DELIVERY_ORDER]), emails.c.status),
                else_=literal(status.value),
            ),
            updated_at=func.now(),
            lease_expires_at=None,
            **{column: bindparam(f"set_{column}") for column in columns},
        )
        .returning(emails.c.id)
        .cte("changed")
    )
    return insert(email_history).from_select(
        ["email_id", "status", "provider", "detail"],
        select(
            changed.c.id,
            literal(status.value),
            bindparam("history_provider", type_=Text),
            bindparam("history_detail", type_=JSONB),
        ),
    )


_CLAIM = _build_claim()
_MARK_SENT = _build_change(
    EmailStatus.SENT,
    "provider",
    "provider_message_id",
    "provider_transaction_id",
    "last_error",
)
_MARK_FAILED = _build_change(EmailStatus.FAILED, "provider", "last_error")
_RELEASE = _build_change(EmailStatus.QUEUED, "last_error")
# Its VALUES come from the parameters' names.
_APPEND = insert(email_history)
# Which of an email's recipients its tenant suppressed (the primary key's index answers it).
_SUPPRESSED = (
    select(suppressions.c.email)
    .join(emails, emails.c.tenant_id == suppressions.c.tenant_id)
    .where(
        emails.c.id == bindparam("email_id"),
        suppressions.c.email == func.any(bindparam("addresses", type_=ARRAY(Text))),
    )
)


class EmailDeliveryStore:
    """Single-statement writes run without BEGIN/COMMIT: each statement is its own transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def _run(self, statement: Any, parameters: dict[str, Any]) -> None:
        async with self._autocommit.connect() as connection:
            await connection.execute(statement, parameters)

    async def claim(self, email_id: uuid.UUID, lease_seconds: int, receive_count: int) -> Claim:
        parameters = {
            "email_id": email_id,
            "lease_seconds": lease_seconds,
            "receive_count": receive_count,
        }
        async with self._autocommit.connect() as connection:
            row = (await connection.execute(_CLAIM, parameters)).first()
        if row is None:
            return Claim(ClaimState.MISSING)
        if row.attempts is None:
            previous = EmailStatus(row.previous_status)
            if previous is EmailStatus.CANCELED:
                return Claim(ClaimState.CANCELED)
            if previous is EmailStatus.SCHEDULED:
                return Claim(ClaimState.NOT_DUE)
            if previous.is_terminal:
                return Claim(ClaimState.FINAL)
            return Claim(ClaimState.BUSY, lease_remaining_seconds=float(row.lease_remaining or 0))
        email = OutgoingEmail(
            id=email_id,
            sender=Mailbox(row.sender_email, row.sender_name),
            to=tuple(_mailbox(m) for m in row.to_recipients),
            cc=tuple(_mailbox(m) for m in row.cc_recipients),
            bcc=tuple(_mailbox(m) for m in row.bcc_recipients),
            reply_to=_mailbox(row.reply_to) if row.reply_to else None,
            subject=row.subject,
            text=row.text_body,
            html=row.html_body,
            headers=row.headers,
            tags=tuple(row.tags),
            metadata=row.metadata,
        )
        return Claim(
            ClaimState.CLAIMED,
            email=email,
            attempt=row.attempts,
            attachments=tuple(_attachment(a) for a in row.attachments),
            tenant_id=row.tenant_id,
        )

    async def record_failed_attempt(
        self, email_id: uuid.UUID, provider: str, detail: dict[str, Any]
    ) -> None:
        await self._run(
            _APPEND,
            {
                "email_id": email_id,
                "status": EmailStatus.FAILED,
                "provider": provider,
                "detail": detail,
            },
        )

    async def suppressed_recipients(
        self, email_id: uuid.UUID, addresses: Sequence[str]
    ) -> frozenset[str]:
        async with self._autocommit.connect() as connection:
            rows = await connection.execute(
                _SUPPRESSED, {"email_id": email_id, "addresses": list(addresses)}
            )
            return frozenset(row.email for row in rows)

    async def mark_sent(
        self,
        email_id: uuid.UUID,
        receipt: SendReceipt,
        skipped: Sequence[str] = (),
        suppressed: Sequence[str] = (),
    ) -> None:
        detail: dict[str, Any] = {
            "outcome": Outcome.ACCEPTED,
            "message_id": receipt.message_id,
            "transaction_id": receipt.transaction_id,
            "http_status": receipt.http_status,
        }
        if skipped:
            detail["skipped"] = list(skipped)
        if suppressed:
            detail["suppressed"] = list(suppressed)
        if receipt.test_mode:
            detail["test_mode"] = True
            detail["note"] = f"every recipient is at {SINK_DOMAIN}: no provider was called"
        await self._run(
            _MARK_SENT,
            {
                "email_id": email_id,
                "history_provider": receipt.provider,
                "history_detail": detail,
                "set_provider": receipt.provider,
                "set_provider_message_id": receipt.message_id,
                "set_provider_transaction_id": receipt.transaction_id,
                "set_last_error": None,
            },
        )

    async def mark_failed(
        self, email_id: uuid.UUID, provider: str | None, detail: dict[str, Any]
    ) -> None:
        await self._run(
            _MARK_FAILED,
            {
                "email_id": email_id,
                "history_provider": provider,
                "history_detail": detail,
                "set_provider": provider,
                "set_last_error": str(detail.get("error") or detail.get("last_error"))[:2000],
            },
        )

    async def release_for_retry(self, email_id: uuid.UUID, detail: dict[str, Any]) -> None:
        await self._run(
            _RELEASE,
            {
                "email_id": email_id,
                "history_provider": None,
                "history_detail": detail,
                "set_last_error": str(detail.get("last_error"))[:2000],
            },
        )

    async def fail_dead_lettered(self, email_id: uuid.UUID) -> DeadLetterOutcome:
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    select(
                        emails.c.status,
                        emails.c.last_error,
                        (emails.c.lease_expires_at < func.now()).label("lease_lapsed"),
                    )
                    .where(emails.c.id == email_id)
                    .with_for_update()
                )
            ).first()
            if row is None:
                return DeadLetterOutcome.MISSING
            status = EmailStatus(row.status)
            if status.is_terminal:
                return DeadLetterOutcome.FINAL
            if status is EmailStatus.SCHEDULED:
                return DeadLetterOutcome.NOT_DUE
            if status is EmailStatus.PROCESSING and not row.lease_lapsed:
                return DeadLetterOutcome.BUSY
            last_error = row.last_error or "its queue message was dead-lettered"
            await connection.execute(
                update(emails)
                .where(emails.c.id == email_id)
                .values(
                    status=EmailStatus.FAILED,
                    last_error=last_error,
                    lease_expires_at=None,
                    updated_at=func.now(),
                )
            )
            detail = {"outcome": Outcome.DEAD_LETTERED, "last_error": last_error}
            await _append(connection, email_id, EmailStatus.FAILED, None, detail)
            return DeadLetterOutcome.FAILED

    async def ping(self) -> None:
        async with self._engine.connect() as connection:
            await connection.execute(select(1))


class PostgresCircuitBreakers:
    """Breaker state in Postgres, so a dead provider costs every processor one timeout, not one
    per email: `threshold` consecutive failures open it for `cooldown_seconds`; then the next
    call is a probe that closes it on success or opens it again on failure."""

    def __init__(self, engine: AsyncEngine, threshold: int, cooldown_seconds: int) -> None:
        self._engine = engine
        self._threshold = threshold
        self._cooldown = cooldown_seconds

    async def snapshot(self) -> dict[str, BreakerState]:
        remaining = func.greatest(
            func.coalesce(func.extract("epoch", provider_breakers.c.opened_until - func.now()), 0),
            0,
        )
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                select(
                    provider_breakers.c.provider,
                    provider_breakers.c.consecutive_failures,
                    remaining.label("open_for"),
                )
            )
            return {
                row.provider: BreakerState(row.consecutive_failures, float(row.open_for))
                for row in rows
            }

    async def record_success(self, provider: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(provider_breakers)
                .where(provider_breakers.c.provider == provider)
                .values(consecutive_failures=0, opened_until=None, updated_at=func.now())
            )

    async def record_failure(self, provider: str, reason: str) -> bool:
        failures = provider_breakers.c.consecutive_failures + 1
        statement = pg_insert(provider_breakers).values(
            provider=provider,
            consecutive_failures=1,
            opened_until=(func.now() + _seconds(self._cooldown)) if self._threshold <= 1 else None,
            last_error=reason[:2000],
        )
        upsert = statement.on_conflict_do_update(
            index_elements=[provider_breakers.c.provider],
            set_={
                "consecutive_failures": failures,
                "opened_until": case(
                    (failures >= self._threshold, func.now() + _seconds(self._cooldown)),
                    else_=provider_breakers.c.opened_until,
                ),
                "last_error": reason[:2000],
                "updated_at": func.now(),
            },
        ).returning(provider_breakers.c.opened_until > func.now())
        async with self._engine.begin() as connection:
            return bool(await connection.scalar(upsert))
