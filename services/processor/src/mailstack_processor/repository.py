"""All of the processor's SQL: claiming an email and recording every change of its state."""

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import (
    case,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection as EngineConnection
from sqlalchemy.ext.asyncio import AsyncEngine

from mailstack_core.batching import StatementBatcher, distinct_keys
from mailstack_core.database import closed_by_server, libpq_conninfo
from mailstack_core.outcomes import Outcome
from mailstack_core.queueing import SQS_BATCH_LIMIT
from mailstack_core.sink import SINK_DOMAIN
from mailstack_core.status import DELIVERY_ORDER, EmailStatus
from mailstack_core.tables import email_history, emails, provider_breakers
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
    connection: EngineConnection,
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
    "sender_email",
    "sender_name",
    "to_recipients",
    "cc_recipients",
    "bcc_recipients",
    "reply_to",
    "subject",
    "text_body",
    "html_body",
    "headers",
    "tags",
    "metadata",
    "attachments",
)
_RECLAIMED_DETAIL = {"reclaimed": True, "previous_attempt_outcome": "unknown"}

# The hot statements are plain SQL run through psycopg (prepared on each connection), not
# SQLAlchemy: its async adaption and statement handling cost more CPU than running them.
# Constants travel as parameters, like every value.
_CONSTANTS: dict[str, Any] = {
    "queued": EmailStatus.QUEUED.value,
    "processing": EmailStatus.PROCESSING.value,
    "reclaimed_detail": Jsonb(_RECLAIMED_DETAIL),
    "no_detail": Jsonb({}),
}

# Lock, claim and append PROCESSING to the history in one statement (one round trip), for a
# batch of emails (mailstack_core.batching; never the same email twice). The row locks of
# `target`, taken in id order so that two batches cannot deadlock, serialise concurrent claims;
# the UPDATE re-checks its condition against the rows the locks returned, so exactly one claim
# moves an email to PROCESSING. The same statement reads which of each claimed email's
# recipients its tenant suppressed (the primary key's index answers it; the list keeps
# addresses lower-case). One row per email found; none for an email that does not exist.
_CLAIM = f"""
WITH input AS (
    SELECT *
    FROM unnest(%(email_ids)s::uuid[], %(receive_counts)s::integer[], %(lease_seconds)s::integer[])
        AS input(email_id, receive_count, lease_seconds)
), target AS (
    SELECT emails.id, emails.status, emails.tenant_id,
        emails.lease_expires_at < now() AS lease_lapsed,
        EXTRACT(epoch FROM emails.lease_expires_at - now()) AS lease_remaining
    FROM emails
    WHERE emails.id = ANY(%(email_ids)s::uuid[])
    ORDER BY emails.id
    FOR UPDATE
), claimed AS (
    UPDATE emails SET
        status = %(processing)s,
        attempts = emails.attempts + 1,
        lease_expires_at = now() + make_interval(0, 0, 0, 0, 0, 0, input.lease_seconds),
        updated_at = now()
    FROM target JOIN input ON input.email_id = target.id
    WHERE emails.id = target.id
        AND (target.status = %(queued)s
            OR target.status = %(processing)s AND target.lease_lapsed)
    RETURNING emails.id, emails.attempts, target.status = %(processing)s AS reclaimed,
        {", ".join(f"emails.{column}" for column in _OUTGOING_COLUMNS)}
), history AS (
    INSERT INTO email_history (email_id, status, provider, detail)
    SELECT claimed.id, %(processing)s, NULL,
        jsonb_build_object('attempt', claimed.attempts, 'receive_count', input.receive_count)
        || CASE WHEN claimed.reclaimed THEN %(reclaimed_detail)s ELSE %(no_detail)s END
    FROM claimed JOIN input ON input.email_id = claimed.id
)
SELECT target.id AS email_id, target.status AS previous_status, target.lease_remaining,
    target.tenant_id, claimed.attempts,
    {", ".join(f"claimed.{column}" for column in _OUTGOING_COLUMNS)},
    ARRAY(
        SELECT suppressions.email FROM suppressions
        WHERE suppressions.tenant_id = target.tenant_id
            AND suppressions.email = ANY(ARRAY(
                SELECT lower(recipient->>'email')
                FROM jsonb_array_elements(
                    claimed.to_recipients || claimed.cc_recipients || claimed.bcc_recipients
                ) AS recipient
            ))
    ) AS suppressed
FROM target LEFT OUTER JOIN claimed ON claimed.id = target.id
"""


# A provider's event may have come before an outcome (its webhook can beat the processor's
# write): the status it set stays, as the status only moves forward (see DELIVERY_ORDER).
_FORWARD = ", ".join(f"'{later.value}'" for later in DELIVERY_ORDER)


def _change(status: EmailStatus, *columns: str) -> str:
    """Set the email's status and `columns`, and append its history row, in one statement.

    Parameters: email_id, history_provider, history_detail, and one per column."""
    assignments = "".join(f"\n        {column} = %({column})s," for column in columns)
    return f"""
WITH changed AS (
    UPDATE emails SET
        status = CASE WHEN emails.status IN ({_FORWARD}) THEN emails.status
            ELSE '{status.value}' END,{assignments}
        lease_expires_at = NULL,
        updated_at = now()
    WHERE emails.id = %(email_id)s
    RETURNING emails.id
)
INSERT INTO email_history (email_id, status, provider, detail)
SELECT changed.id, '{status.value}', %(history_provider)s, %(history_detail)s
FROM changed
"""


# SENT for a batch of emails (mailstack_core.batching), with each one's provider, ids and
# history detail: rows locked in id order first, as the claim does, so that a batch of outcomes
# and a batch of claims holding some of the same emails (a duplicate message) cannot deadlock.
# The status only moves forward, as in `_change`.
_MARK_SENT = f"""
WITH input AS (
    SELECT *
    FROM unnest(
        %(email_ids)s::uuid[], %(providers)s::text[], %(message_ids)s::text[],
        %(transaction_ids)s::text[], %(details)s::jsonb[]
    ) AS input(email_id, provider, message_id, transaction_id, detail)
), locked AS (
    SELECT emails.id FROM emails
    WHERE emails.id = ANY(%(email_ids)s::uuid[])
    ORDER BY emails.id
    FOR UPDATE
), changed AS (
    UPDATE emails SET
        status = CASE WHEN emails.status IN ({_FORWARD}) THEN emails.status
            ELSE '{EmailStatus.SENT.value}' END,
        provider = input.provider,
        provider_message_id = input.message_id,
        provider_transaction_id = input.transaction_id,
        last_error = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    FROM locked JOIN input ON input.email_id = locked.id
    WHERE emails.id = locked.id
    RETURNING emails.id
)
INSERT INTO email_history (email_id, status, provider, detail)
SELECT changed.id, '{EmailStatus.SENT.value}', input.provider, input.detail
FROM changed JOIN input ON input.email_id = changed.id
"""
_MARK_FAILED = _change(EmailStatus.FAILED, "provider", "last_error")
_RELEASE = _change(EmailStatus.QUEUED, "last_error")
_APPEND = """
INSERT INTO email_history (email_id, status, provider, detail)
VALUES (%(email_id)s, %(status)s, %(provider)s, %(detail)s)
"""

Row = dict[str, Any]


async def _unbroken(connection: AsyncConnection[Any]) -> None:
    """The pool's check of a connection before it is handed out, without a round trip: an
    idle connection has nothing to read, unless the server closed it (a restart, a
    terminated backend: it sends its FATAL, then EOF). Closed here, the pool replaces it."""
    if not connection.closed:
        if not closed_by_server(connection.fileno()):
            return
        await connection.close()
    raise psycopg.OperationalError("the server closed the connection")


def delivery_pool(database_url: str, size: int) -> AsyncConnectionPool[AsyncConnection[Any]]:
    """The hot statements' connections (autocommit: each statement is its own transaction),
    to open with `async with`. A connection the server closed while it was idle (see
    `_unbroken`) is replaced rather than failing a delivery; while the database is down, a
    delivery waits at most `timeout` seconds for a connection. It opens one connection at start
    and grows to `size` as deliveries wait: an idle processor holds no more than it needs of the
    database's connection limit (all of them at once exhausted a shared server's 100 when
    several stacks started together)."""
    return AsyncConnectionPool(
        libpq_conninfo(database_url),
        min_size=1,
        max_size=size,
        kwargs={"autocommit": True, "connect_timeout": 3},
        check=_unbroken,
        timeout=3,
        open=False,
        name="delivery",
    )


@dataclass(frozen=True)
class _ClaimRequest:
    email_id: uuid.UUID
    lease_seconds: int
    receive_count: int


@dataclass(frozen=True)
class _Sent:
    email_id: uuid.UUID
    receipt: SendReceipt
    detail: Jsonb


def _claim_of(email_id: uuid.UUID, row: Row | None) -> Claim:
    """What the claim statement's row for `email_id` says (None: no such email)."""
    if row is None:
        return Claim(ClaimState.MISSING)
    if row["attempts"] is None:
        previous = EmailStatus(row["previous_status"])
        if previous is EmailStatus.CANCELED:
            return Claim(ClaimState.CANCELED)
        if previous is EmailStatus.SCHEDULED:
            return Claim(ClaimState.NOT_DUE)
        if previous.is_terminal:
            return Claim(ClaimState.FINAL)
        remaining = float(row["lease_remaining"] or 0)
        return Claim(ClaimState.BUSY, lease_remaining_seconds=remaining)
    email = OutgoingEmail(
        id=email_id,
        sender=Mailbox(row["sender_email"], row["sender_name"]),
        to=tuple(_mailbox(m) for m in row["to_recipients"]),
        cc=tuple(_mailbox(m) for m in row["cc_recipients"]),
        bcc=tuple(_mailbox(m) for m in row["bcc_recipients"]),
        reply_to=_mailbox(row["reply_to"]) if row["reply_to"] else None,
        subject=row["subject"],
        text=row["text_body"],
        html=row["html_body"],
        headers=row["headers"],
        tags=tuple(row["tags"]),
        metadata=row["metadata"],
    )
    return Claim(
        ClaimState.CLAIMED,
        email=email,
        attempt=row["attempts"],
        attachments=tuple(_attachment(a) for a in row["attachments"]),
        tenant_id=row["tenant_id"],
        suppressed=frozenset(row["suppressed"]),
    )


class EmailDeliveryStore:
    """Single-statement writes run without BEGIN/COMMIT: each statement is its own transaction.

    The hot statements (claim, suppression check, outcome) run on `pool`'s psycopg connections;
    without a pool (tests, tools), on a psycopg connection borrowed from `engine`."""

    def __init__(
        self, engine: AsyncEngine, pool: "AsyncConnectionPool[AsyncConnection[Any]] | None" = None
    ) -> None:
        self._engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._pool = pool
        self._claims: StatementBatcher[_ClaimRequest, Claim] = StatementBatcher(
            self._claim_batch, distinct_keys(lambda request: request.email_id, SQS_BATCH_LIMIT)
        )
        # Emails SENT at about the same time: committed together, each caller answered once
        # its row is durable (before its message is deleted). Deliveries end one by one, so
        # one statement at a time lets the next gather what ended meanwhile (measured: 2.6
        # emails a statement with two writers, 3.4 with one; drain 562 -> 684 emails/s).
        self._outcomes: StatementBatcher[_Sent, None] = StatementBatcher(
            self._mark_sent_batch,
            distinct_keys(lambda sent: sent.email_id, SQS_BATCH_LIMIT),
            writers=1,
        )

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        if self._pool is not None:
            async with self._pool.connection() as connection:
                yield connection
            return
        async with self._autocommit.connect() as borrowed:
            driver = (await borrowed.get_raw_connection()).driver_connection
            assert isinstance(driver, AsyncConnection)
            yield driver

    async def _fetch(self, statement: str, parameters: dict[str, Any]) -> list[Row]:
        async with self._connection() as connection:
            cursor = connection.cursor(row_factory=dict_row)
            await cursor.execute(statement, parameters, prepare=True)
            return await cursor.fetchall() if cursor.description else []

    async def claim(self, email_id: uuid.UUID, lease_seconds: int, receive_count: int) -> Claim:
        """Claim the email, in one statement with the claims that other deliveries make at the
        same time (see mailstack_core.batching)."""
        return await self._claims.submit(_ClaimRequest(email_id, lease_seconds, receive_count))

    async def _claim_batch(self, requests: Sequence["_ClaimRequest"]) -> list[Claim]:
        parameters = {
            **_CONSTANTS,
            "email_ids": [request.email_id for request in requests],
            "receive_counts": [request.receive_count for request in requests],
            "lease_seconds": [request.lease_seconds for request in requests],
        }
        rows = {row["email_id"]: row for row in await self._fetch(_CLAIM, parameters)}
        return [_claim_of(request.email_id, rows.get(request.email_id)) for request in requests]

    async def record_failed_attempt(
        self, email_id: uuid.UUID, provider: str, detail: dict[str, Any]
    ) -> None:
        await self._fetch(
            _APPEND,
            {
                "email_id": email_id,
                "status": EmailStatus.FAILED.value,
                "provider": provider,
                "detail": Jsonb(detail),
            },
        )

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
        await self._outcomes.submit(_Sent(email_id, receipt, Jsonb(detail)))

    async def _mark_sent_batch(self, sent: Sequence["_Sent"]) -> list[None]:
        await self._fetch(
            _MARK_SENT,
            {
                "email_ids": [each.email_id for each in sent],
                "providers": [each.receipt.provider for each in sent],
                "message_ids": [each.receipt.message_id for each in sent],
                "transaction_ids": [each.receipt.transaction_id for each in sent],
                "details": [each.detail for each in sent],
            },
        )
        return [None for _ in sent]

    async def mark_failed(
        self, email_id: uuid.UUID, provider: str | None, detail: dict[str, Any]
    ) -> None:
        await self._fetch(
            _MARK_FAILED,
            {
                "email_id": email_id,
                "history_provider": provider,
                "history_detail": Jsonb(detail),
                "provider": provider,
                "last_error": str(detail.get("error") or detail.get("last_error"))[:2000],
            },
        )

    async def release_for_retry(self, email_id: uuid.UUID, detail: dict[str, Any]) -> None:
        await self._fetch(
            _RELEASE,
            {
                "email_id": email_id,
                "history_provider": None,
                "history_detail": Jsonb(detail),
                "last_error": str(detail.get("last_error"))[:2000],
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
        """The consumer's check before it receives again after a failure: the connections
        deliveries use answer (the pool has replaced the ones an outage broke)."""
        await self._fetch("SELECT 1", {})


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
