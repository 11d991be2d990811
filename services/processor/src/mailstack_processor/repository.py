"""All of the processor's SQL: claiming an email and recording every change of its state."""

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailstack_core.status import EmailStatus
from mailstack_core.tables import email_history, emails, provider_breakers
from mailstack_processor.delivery import BreakerState, Claim, ClaimState, DeadLetterOutcome
from mailstack_processor.providers.base import Mailbox, OutgoingEmail, SendReceipt


def _seconds(seconds: int) -> Any:
    return func.make_interval(0, 0, 0, 0, 0, 0, seconds)


def _mailbox(value: dict[str, Any]) -> Mailbox:
    return Mailbox(email=value["email"], name=value.get("name"))


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


class EmailDeliveryStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def claim(self, email_id: uuid.UUID, lease_seconds: int, receive_count: int) -> Claim:
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    select(
                        emails,
                        (emails.c.lease_expires_at < func.now()).label("lease_lapsed"),
                        func.extract("epoch", emails.c.lease_expires_at - func.now()).label(
                            "lease_remaining"
                        ),
                    )
                    .where(emails.c.id == email_id)
                    .with_for_update()
                )
            ).first()
            if row is None:
                return Claim(ClaimState.MISSING)
            status = EmailStatus(row.status)
            if status.is_terminal:
                return Claim(ClaimState.FINAL)
            reclaimed = status is EmailStatus.PROCESSING
            if reclaimed and not row.lease_lapsed:
                return Claim(ClaimState.BUSY, lease_remaining_seconds=float(row.lease_remaining))
            attempt = row.attempts + 1
            await connection.execute(
                update(emails)
                .where(emails.c.id == email_id)
                .values(
                    status=EmailStatus.PROCESSING,
                    attempts=attempt,
                    lease_expires_at=func.now() + _seconds(lease_seconds),
                    updated_at=func.now(),
                )
            )
            detail: dict[str, Any] = {"attempt": attempt, "receive_count": receive_count}
            if reclaimed:
                # The previous holder died mid-send: the provider may have accepted it already.
                detail["reclaimed"] = True
                detail["previous_attempt_outcome"] = "unknown"
            await _append(connection, email_id, EmailStatus.PROCESSING, None, detail)
        email = OutgoingEmail(
            id=row.id,
            sender=Mailbox(row.sender_email, row.sender_name),
            to=tuple(_mailbox(m) for m in row.to_recipients),
            cc=tuple(_mailbox(m) for m in row.cc_recipients),
            bcc=tuple(_mailbox(m) for m in row.bcc_recipients),
            reply_to=_mailbox(row.reply_to) if row.reply_to else None,
            subject=row.subject,
            text=row.text_body,
            html=row.html_body,
        )
        return Claim(ClaimState.CLAIMED, email=email, attempt=attempt)

    async def record_failed_attempt(
        self, email_id: uuid.UUID, provider: str, detail: dict[str, Any]
    ) -> None:
        async with self._engine.begin() as connection:
            await _append(connection, email_id, EmailStatus.FAILED, provider, detail)

    async def mark_sent(
        self, email_id: uuid.UUID, receipt: SendReceipt, skipped: Sequence[str] = ()
    ) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(emails)
                .where(emails.c.id == email_id)
                .values(
                    status=EmailStatus.SENT,
                    provider=receipt.provider,
                    provider_message_id=receipt.message_id,
                    provider_transaction_id=receipt.transaction_id,
                    lease_expires_at=None,
                    last_error=None,
                    updated_at=func.now(),
                )
            )
            detail: dict[str, Any] = {
                "outcome": "accepted",
                "message_id": receipt.message_id,
                "transaction_id": receipt.transaction_id,
                "http_status": receipt.http_status,
            }
            if skipped:
                detail["skipped"] = list(skipped)
            await _append(connection, email_id, EmailStatus.SENT, receipt.provider, detail)

    async def mark_failed(
        self, email_id: uuid.UUID, provider: str | None, detail: dict[str, Any]
    ) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(emails)
                .where(emails.c.id == email_id)
                .values(
                    status=EmailStatus.FAILED,
                    provider=provider,
                    last_error=str(detail.get("error") or detail.get("last_error"))[:2000],
                    lease_expires_at=None,
                    updated_at=func.now(),
                )
            )
            await _append(connection, email_id, EmailStatus.FAILED, provider, detail)

    async def release_for_retry(self, email_id: uuid.UUID, detail: dict[str, Any]) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(emails)
                .where(emails.c.id == email_id)
                .values(
                    status=EmailStatus.QUEUED,
                    last_error=str(detail.get("last_error"))[:2000],
                    lease_expires_at=None,
                    updated_at=func.now(),
                )
            )
            await _append(connection, email_id, EmailStatus.QUEUED, None, detail)

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
            detail = {"outcome": "dead_lettered", "last_error": last_error}
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
