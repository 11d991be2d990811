"""All of the gateway's SQL: storing accepted emails, the outbox, and the read-side queries."""

import base64
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, delete, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailstack_core.outcomes import Outcome
from mailstack_core.status import EmailStatus
from mailstack_core.tables import email_history, email_outbox, emails
from mailstack_gateway.cancellation import Cancellation
from mailstack_gateway.intake import (
    Earlier,
    EarlierRequest,
    IdempotencyKey,
    NewEmail,
    RequestInFlight,
    StoredAttachment,
)
from mailstack_gateway.outbox import OutboxBacklog
from mailstack_gateway.schemas import EmailCreate

AnyRow = Row[*tuple[Any, ...]]


class InvalidCursorError(ValueError):
    """A list cursor that this gateway did not hand out."""


def _address(address: Any) -> dict[str, Any]:
    return address.model_dump(mode="json", exclude_none=True)  # type: ignore[no-any-return]


# Data-modifying CTEs run as one statement: the history and outbox rows see the new emails, and
# their foreign keys are checked when the statement ends, with the emails in place. The emails
# come as one JSON array (one row each), so a batch of a hundred is still one statement.
def _save_emails(keyed: bool) -> Any:
    """The accept statement; `keyed`: only if this request's claim on the idempotency key is
    still there (unfinished, naming these ids), completed in the same statement, so the key's
    answer and its emails commit together or not at all. An email with a `send_at` is SCHEDULED
    and gets no outbox row: the scheduler gives it one when it is due."""
    key_cte = """
    key_taken AS (
        UPDATE idempotency_keys
            SET email_id = (CAST(:email_ids AS uuid[]))[1],
                expires_at = now() + make_interval(secs => :key_ttl_seconds)
            WHERE tenant_id = :tenant_id AND key = :idempotency_key
              AND email_id IS NULL AND email_ids = CAST(:email_ids AS uuid[])
        RETURNING email_id
    ),"""
    return text(
        f"""
    WITH {key_cte if keyed else ""} new_email AS (
        INSERT INTO emails (
            id, tenant_id, sender_email, sender_name, to_recipients, cc_recipients,
            bcc_recipients, reply_to, subject, text_body, html_body, status, request_body,
            send_at, headers, tags, metadata, attachments
        )
        SELECT
            r.id, :tenant_id, r.sender_email, r.sender_name, r.to_recipients, r.cc_recipients,
            r.bcc_recipients, r.reply_to, r.subject, r.text_body, r.html_body,
            CASE WHEN r.send_at IS NULL THEN '{EmailStatus.QUEUED.value}'
                 ELSE '{EmailStatus.SCHEDULED.value}' END,
            r.request_body, r.send_at, r.headers, r.tags, r.metadata, r.attachments
        FROM json_to_recordset(CAST(:rows AS json)) AS r(
            id uuid, sender_email text, sender_name text, to_recipients jsonb,
            cc_recipients jsonb, bcc_recipients jsonb, reply_to jsonb, subject text,
            text_body text, html_body text, request_body text, send_at timestamptz,
            headers jsonb, tags text[], metadata jsonb, attachments jsonb
        )
        {"WHERE EXISTS (SELECT 1 FROM key_taken)" if keyed else ""}
        RETURNING id, status, send_at
    ), accepted AS (
        INSERT INTO email_history (email_id, status, detail)
        SELECT id, status, jsonb_strip_nulls(
            jsonb_build_object('outcome', '{Outcome.ACCEPTED.value}', 'send_at', send_at)
        )
        FROM new_email
    ), queued AS (
        INSERT INTO email_outbox (email_id, next_attempt_at)
        SELECT id, now() + make_interval(secs => :grace_seconds) FROM new_email
        WHERE status = '{EmailStatus.QUEUED.value}'
    )
    SELECT count(*) AS stored FROM new_email
    """
    )


def _email_row(new: NewEmail) -> dict[str, Any]:
    """One element of the accept statement's `rows`: what the `emails` row stores."""
    email = new.email
    return {
        "id": str(new.id),
        "sender_email": str(email.sender.email),
        "sender_name": email.sender.name,
        "to_recipients": [_address(address) for address in email.to],
        "cc_recipients": [_address(address) for address in email.cc],
        "bcc_recipients": [_address(address) for address in email.bcc],
        "reply_to": _address(email.reply_to) if email.reply_to else None,
        "subject": email.subject,
        "text_body": email.text,
        "html_body": email.html,
        "request_body": new.request_body,
        "send_at": email.send_at.isoformat() if email.send_at else None,
        "headers": email.headers,
        "tags": list(email.tags),
        "metadata": email.metadata,
        "attachments": [attachment.to_json() for attachment in new.attachments],
    }


_SAVE_EMAILS = _save_emails(keyed=False)
_SAVE_EMAILS_KEYED = _save_emails(keyed=True)
# A key is claimed for a request in its own statement (autocommit) before anything else is
# done: a new key, or one whose 24 h (or, unfinished, whose claim's lease) is over. The claim is
# the row with no `email_id` yet, naming the ids its request will store.
_CLAIM_KEY = text(
    """
    INSERT INTO idempotency_keys AS k
        (tenant_id, key, request_sha256, email_id, email_ids, expires_at)
    VALUES (:tenant_id, :idempotency_key, :request_sha256, NULL, CAST(:email_ids AS uuid[]),
            now() + make_interval(secs => :claim_seconds))
    ON CONFLICT (tenant_id, key) DO UPDATE
        SET request_sha256 = EXCLUDED.request_sha256, email_id = NULL,
            email_ids = EXCLUDED.email_ids, created_at = now(), expires_at = EXCLUDED.expires_at
        WHERE k.expires_at <= now()
    RETURNING 1
    """
)
_RELEASE_KEY = text(
    "DELETE FROM idempotency_keys WHERE tenant_id = :tenant_id AND key = :idempotency_key"
    " AND email_id IS NULL AND email_ids = CAST(:email_ids AS uuid[])"
)
_EARLIER_REQUEST = text(
    "SELECT email_id, coalesce(email_ids, ARRAY[email_id]) AS email_ids, request_sha256"
    " FROM idempotency_keys WHERE tenant_id = :tenant_id AND key = :idempotency_key"
)
_FORGET_EXPIRED_KEYS = text(
    """
    DELETE FROM idempotency_keys WHERE ctid IN (
        SELECT ctid FROM idempotency_keys WHERE expires_at <= now() LIMIT :limit
    )
    """
)
# How long a key answers with its first request's email.
IDEMPOTENCY_KEY_TTL_SECONDS = 24 * 3600
# How long an unfinished claim holds its key: longer than a request takes (an email's S3 puts
# give up within about 40 s), so in practice only a crashed gateway's claim lapses, the client's
# retries being told 409 until it does. A request slower still stays safe: if a retry took its
# lapsed claim, it stores nothing and answers as that retry does.
IDEMPOTENCY_CLAIM_SECONDS = 60
# A claim that is neither taken nor found was released or expired in between: try again.
_CLAIM_ATTEMPTS = 3


# Emails nothing has touched for `stranded_after` seconds, with no outbox row (so nothing will
# publish them) and not waiting out a retry backoff, are locked (skipping rows a processor or
# another gateway holds), touched, given an outbox row due now and a history row. One statement.
_REPUBLISH_STRANDED = text(
    f"""
    WITH stranded AS (
        SELECT e.id, e.status
        FROM emails e
        LEFT JOIN LATERAL (
            SELECT h.at, h.detail FROM email_history h
            WHERE h.email_id = e.id ORDER BY h.id DESC LIMIT 1
        ) last ON true
        WHERE (
            (e.status = '{EmailStatus.QUEUED.value}'
             AND e.updated_at < now() - make_interval(secs => :after))
            OR (e.status = '{EmailStatus.PROCESSING.value}'
                AND e.lease_expires_at < now() - make_interval(secs => :after))
        )
        AND NOT EXISTS (SELECT 1 FROM email_outbox o WHERE o.email_id = e.id)
        AND NOT (
            coalesce(last.detail ->> 'outcome', '') = '{Outcome.RETRY_SCHEDULED.value}'
            AND last.at + make_interval(
                secs => coalesce((last.detail ->> 'retry_in_seconds')::float, 0) + :after
            ) > now()
        )
        ORDER BY e.updated_at
        LIMIT :limit
        FOR UPDATE OF e SKIP LOCKED
    ), touched AS (
        UPDATE emails SET updated_at = now()
        FROM stranded WHERE emails.id = stranded.id
        RETURNING emails.id, emails.status
    ), queued AS (
        INSERT INTO email_outbox (email_id, next_attempt_at)
        SELECT id, now() FROM touched
        ON CONFLICT (email_id) DO NOTHING
    )
    INSERT INTO email_history (email_id, status, detail)
    SELECT id, status, jsonb_build_object(
        'outcome', '{Outcome.REPUBLISHED.value}',
        'reason', 'no sign of life for ' || :after || ' s: its queue message is presumed lost'
    )
    FROM touched
    RETURNING email_id
    """
)


# Due SCHEDULED emails, locked (skipping rows another gateway's scheduler or a cancel holds),
# become QUEUED with a history row and an outbox row: one statement, so an email is queued
# exactly once, by whichever scheduler locked it, and a crash leaves it SCHEDULED or queued.
_QUEUE_DUE = text(
    f"""
    WITH due AS (
        SELECT id FROM emails
        WHERE status = '{EmailStatus.SCHEDULED.value}' AND send_at <= now()
        ORDER BY send_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), queued AS (
        UPDATE emails SET status = '{EmailStatus.QUEUED.value}', updated_at = now()
        FROM due WHERE emails.id = due.id
        RETURNING emails.id, emails.send_at
    ), outboxed AS (
        INSERT INTO email_outbox (email_id, next_attempt_at)
        SELECT id, now() + make_interval(secs => :grace_seconds) FROM queued
        ON CONFLICT (email_id) DO NOTHING
    )
    INSERT INTO email_history (email_id, status, detail)
    SELECT id, '{EmailStatus.QUEUED.value}',
           jsonb_build_object('outcome', '{Outcome.DUE.value}', 'send_at', send_at)
    FROM queued
    RETURNING email_id
    """
)

# The email is locked first, so a cancel and a processor's claim (which locks it too) are
# serialised: whichever comes second sees the other's status. A canceled email's outbox row is
# dropped unless a publisher holds it right now; the processor drops a message it then gets.
_CANCEL = text(
    f"""
    WITH target AS (
        SELECT id, status FROM emails
        WHERE id = :email_id AND tenant_id = :tenant_id
        FOR UPDATE
    ), canceled AS (
        UPDATE emails SET status = '{EmailStatus.CANCELED.value}', lease_expires_at = NULL,
                          updated_at = now()
        FROM target
        WHERE emails.id = target.id
          AND target.status IN ('{EmailStatus.SCHEDULED.value}', '{EmailStatus.QUEUED.value}')
        RETURNING emails.id, target.status AS previous_status
    ), recorded AS (
        INSERT INTO email_history (email_id, status, detail)
        SELECT id, '{EmailStatus.CANCELED.value}', jsonb_build_object(
            'outcome', '{Outcome.CANCELED.value}', 'previous_status', previous_status
        )
        FROM canceled
    ), unpublished AS (
        DELETE FROM email_outbox WHERE email_id IN (
            SELECT o.email_id FROM email_outbox o JOIN canceled c ON o.email_id = c.id
            FOR UPDATE OF o SKIP LOCKED
        )
    )
    SELECT target.status, canceled.id IS NOT NULL AS canceled
    FROM target LEFT JOIN canceled ON true
    """
)


def _key_params(
    tenant_id: str, idempotency: IdempotencyKey, email_ids: Sequence[uuid.UUID]
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "idempotency_key": idempotency.key,
        "request_sha256": idempotency.request_sha256,
        "email_ids": list(email_ids),
        "claim_seconds": float(IDEMPOTENCY_CLAIM_SECONDS),
        "key_ttl_seconds": float(IDEMPOTENCY_KEY_TTL_SECONDS),
    }


async def _earlier_request(connection: AsyncConnection, params: dict[str, Any]) -> Earlier | None:
    """The request that holds the key: done (its emails), or in flight (no email yet)."""
    row = (await connection.execute(_EARLIER_REQUEST, params)).first()
    if row is None:
        return None
    if row.email_id is None:
        return RequestInFlight(bytes(row.request_sha256))
    return EarlierRequest(row.email_id, bytes(row.request_sha256), tuple(row.email_ids))


class EmailWriter:
    """Writes go to the primary only."""

    def __init__(
        self, engine: AsyncEngine, outbox_grace_seconds: float, outbox_max_backoff_seconds: float
    ) -> None:
        self._engine = engine
        # The same pool; each statement commits on its own.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._grace = outbox_grace_seconds
        self._max_backoff = outbox_max_backoff_seconds

    async def save_queued(
        self,
        tenant_id: str,
        email_id: uuid.UUID,
        email: EmailCreate,
        request_body: str,
        idempotency: IdempotencyKey | None = None,
        attachments: Sequence[StoredAttachment] = (),
    ) -> Earlier | None:
        """One email: see `save_batch`."""
        return await self.save_batch(
            tenant_id, [NewEmail(email_id, email, request_body, attachments)], idempotency
        )

    async def claim_key(
        self, tenant_id: str, idempotency: IdempotencyKey, email_ids: Sequence[uuid.UUID]
    ) -> Earlier | None:
        """Take the key for a request that will store `email_ids`, committed at once; None when
        taken, otherwise the request that holds it (done, or still in flight). A key whose
        emails are committing right now is waited for (its row is locked for milliseconds), so
        the answer is then its replay, never a 409."""
        params = _key_params(tenant_id, idempotency, email_ids)
        async with self._autocommit.connect() as connection:
            for _ in range(_CLAIM_ATTEMPTS):
                if (await connection.execute(_CLAIM_KEY, params)).first() is not None:
                    return None
                earlier = await _earlier_request(connection, params)
                if earlier is not None:
                    return earlier
        # Released and taken again, over and over: as busy as a request in flight.
        return RequestInFlight(idempotency.request_sha256)

    async def release_key(
        self, tenant_id: str, idempotency: IdempotencyKey, email_ids: Sequence[uuid.UUID]
    ) -> None:
        async with self._autocommit.connect() as connection:
            await connection.execute(_RELEASE_KEY, _key_params(tenant_id, idempotency, email_ids))

    async def save_batch(
        self,
        tenant_id: str,
        new_emails: Sequence[NewEmail],
        idempotency: IdempotencyKey | None = None,
    ) -> Earlier | None:
        """The emails, each with its history row (QUEUED, or SCHEDULED) and, if QUEUED, its
        outbox row (and the completion of the idempotency key's claim, made by `claim_key` for
        these ids): one statement, so one round trip, atomic on its own (autocommit): all of
        them or none. When the claim is no longer theirs, nothing is stored and the request that
        holds the key is returned (None for it would mean: the key is free again; answered as
        in flight, so that the client retries). Attachments are described (they are already in
        S3); their bytes are not stored here."""
        params: dict[str, Any] = {
            "tenant_id": tenant_id,
            "rows": json.dumps([_email_row(new) for new in new_emails]),
            "grace_seconds": float(self._grace),
        }
        if idempotency is None:
            async with self._autocommit.connect() as connection:
                await connection.execute(_SAVE_EMAILS, params)
            return None
        params |= _key_params(tenant_id, idempotency, [new.id for new in new_emails])
        async with self._autocommit.connect() as connection:
            stored = (await connection.execute(_SAVE_EMAILS_KEYED, params)).scalar_one()
            if stored:
                return None
            earlier = await _earlier_request(connection, params)
        return earlier or RequestInFlight(idempotency.request_sha256)

    async def forget_expired_keys(self, limit: int = 1000) -> int:
        async with self._autocommit.connect() as connection:
            result = await connection.execute(_FORGET_EXPIRED_KEYS, {"limit": limit})
            return int(result.rowcount)

    async def republish_stranded(self, after_seconds: float, limit: int) -> list[uuid.UUID]:
        """Give emails whose queue message seems lost an outbox row again; return their ids."""
        async with self._autocommit.connect() as connection:
            rows = await connection.execute(
                _REPUBLISH_STRANDED, {"after": float(after_seconds), "limit": limit}
            )
            return [row.email_id for row in rows]

    async def queue_due(self, limit: int) -> list[uuid.UUID]:
        """Queue SCHEDULED emails whose `send_at` has come; return their ids."""
        async with self._autocommit.connect() as connection:
            rows = await connection.execute(
                _QUEUE_DUE, {"limit": limit, "grace_seconds": float(self._grace)}
            )
            return [row.email_id for row in rows]

    async def cancel(self, tenant_id: str, email_id: uuid.UUID) -> Cancellation | None:
        """Cancel the tenant's email if it is SCHEDULED or QUEUED; None if it has no such email."""
        async with self._autocommit.connect() as connection:
            row = (
                await connection.execute(_CANCEL, {"tenant_id": tenant_id, "email_id": email_id})
            ).first()
        if row is None:
            return None
        return Cancellation(previous_status=EmailStatus(row.status), canceled=bool(row.canceled))

    async def outbox_backlog(self) -> OutboxBacklog:
        async with self._autocommit.connect() as connection:
            row = (await connection.execute(_OUTBOX_BACKLOG)).one()
        return OutboxBacklog(int(row.depth), float(row.oldest_age or 0.0))

    @asynccontextmanager
    async def claim_ids(self, email_ids: Sequence[uuid.UUID]) -> AsyncIterator["OutboxBatch"]:
        async with self._engine.begin() as connection:
            rows = await connection.execute(
                select(email_outbox.c.email_id)
                .where(email_outbox.c.email_id.in_(email_ids))
                .with_for_update(skip_locked=True)
            )
            yield OutboxBatch(connection, [row.email_id for row in rows], self._max_backoff)

    @asynccontextmanager
    async def claim_due(self, limit: int) -> AsyncIterator["OutboxBatch"]:
        async with self._engine.begin() as connection:
            rows = await connection.execute(
                select(email_outbox.c.email_id)
                .where(email_outbox.c.next_attempt_at <= func.now())
                .order_by(email_outbox.c.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            yield OutboxBatch(connection, [row.email_id for row in rows], self._max_backoff)


# For the outbox gauges, once per reconciler round.
_OUTBOX_BACKLOG = select(
    func.count().label("depth"),
    func.extract("epoch", func.now() - func.min(email_outbox.c.created_at)).label("oldest_age"),
)


@dataclass
class OutboxBatch:
    """Outbox rows locked by this relay until its transaction ends."""

    connection: AsyncConnection
    email_ids: list[uuid.UUID] = field(default_factory=list)
    max_backoff_seconds: float = 60.0

    async def mark_published(self, email_ids: Sequence[uuid.UUID]) -> None:
        await self.connection.execute(
            delete(email_outbox).where(email_outbox.c.email_id.in_(email_ids))
        )

    async def reschedule(self, email_ids: Sequence[uuid.UUID], error: str) -> None:
        # Exponential backoff from 1 s, capped, so a long SQS outage is not hammered.
        backoff = func.least(func.power(2, email_outbox.c.attempts), self.max_backoff_seconds)
        await self.connection.execute(
            update(email_outbox)
            .where(email_outbox.c.email_id.in_(email_ids))
            .values(
                attempts=email_outbox.c.attempts + 1,
                last_error=error[:2000],
                next_attempt_at=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, backoff),
            )
        )


# What GET /v1/emails/{id} shows: never the bodies or the stored request, which can be large.
_PUBLIC_COLUMNS = (
    emails.c.id,
    emails.c.status,
    emails.c.provider,
    emails.c.provider_message_id,
    emails.c.sender_email,
    emails.c.sender_name,
    emails.c.to_recipients,
    emails.c.cc_recipients,
    emails.c.bcc_recipients,
    emails.c.reply_to,
    emails.c.subject,
    emails.c.headers,
    emails.c.tags,
    emails.c.metadata,
    emails.c.attachments,
    emails.c.attempts,
    emails.c.last_error,
    emails.c.send_at,
    emails.c.created_at,
    emails.c.updated_at,
)


@dataclass(frozen=True)
class Page:
    rows: list[AnyRow]
    next_cursor: str | None


def encode_cursor(created_at: datetime, email_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{email_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, email_id = raw.split("|", 1)
        return datetime.fromisoformat(created_at), uuid.UUID(email_id)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidCursorError("cursor is not one this API returned") from error


class EmailReader:
    """Read-side queries, each confined to one tenant's emails; the engine may be a replica.
    Each statement runs on its own (autocommit): no BEGIN and ROLLBACK round trips around it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def get(self, tenant_id: str, email_id: uuid.UUID) -> AnyRow | None:
        async with self._engine.connect() as connection:
            result = await connection.execute(
                select(*_PUBLIC_COLUMNS).where(
                    emails.c.id == email_id, emails.c.tenant_id == tenant_id
                )
            )
            return result.first()

    async def history(self, tenant_id: str, email_id: uuid.UUID) -> list[AnyRow] | None:
        async with self._engine.connect() as connection:
            exists = await connection.scalar(
                select(emails.c.id).where(emails.c.id == email_id, emails.c.tenant_id == tenant_id)
            )
            if exists is None:
                return None
            result = await connection.execute(
                select(email_history)
                .where(email_history.c.email_id == email_id)
                .order_by(email_history.c.id)
            )
            return list(result)

    async def page(
        self,
        tenant_id: str,
        status: EmailStatus | None,
        limit: int,
        cursor: str | None,
        tag: str | None = None,
    ) -> Page:
        query = select(
            emails.c.id,
            emails.c.status,
            emails.c.subject,
            emails.c.tags,
            emails.c.provider,
            emails.c.attempts,
            emails.c.created_at,
            emails.c.updated_at,
        ).where(emails.c.tenant_id == tenant_id)
        if status is not None:
            query = query.where(emails.c.status == status)
        if tag is not None:
            # `tags @> ARRAY[tag]`: what the GIN index on tags answers.
            query = query.where(emails.c.tags.contains([tag]))
        if cursor is not None:
            created_at, email_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    emails.c.created_at < created_at,
                    and_(emails.c.created_at == created_at, emails.c.id < email_id),
                )
            )
        query = query.order_by(emails.c.created_at.desc(), emails.c.id.desc()).limit(limit + 1)
        async with self._engine.connect() as connection:
            rows = list(await connection.execute(query))
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id)
        return Page(rows=rows, next_cursor=next_cursor)

    async def ping(self) -> None:
        async with self._engine.connect() as connection:
            await connection.execute(select(1))
