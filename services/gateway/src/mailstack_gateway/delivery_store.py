"""The SQL of delivery truth: recording provider events, and each tenant's suppression list."""

import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailstack_core.status import EmailStatus
from mailstack_core.tables import email_history, emails, suppressions
from mailstack_gateway.provider_events import MatchedEmail, ProviderEvent, SuppressionReason
from mailstack_gateway.repository import AnyRow, InvalidCursorError


@dataclass
class PostgresEventTransaction:
    connection: AsyncConnection

    async def find_email(self, event: ProviderEvent) -> MatchedEmail | None:
        matches = []
        if event.email_id is not None:
            matches.append(emails.c.id == event.email_id)
        if event.message_id is not None:
            matches.append(
                and_(
                    emails.c.provider == event.provider,
                    emails.c.provider_message_id == event.message_id,
                )
            )
        if not matches:
            return None
        row = (
            await self.connection.execute(
                select(emails.c.id, emails.c.tenant_id, emails.c.status)
                .where(or_(*matches))
                .limit(1)
                .with_for_update()
            )
        ).first()
        return None if row is None else MatchedEmail(row.id, row.tenant_id, EmailStatus(row.status))

    async def append(self, email_id: uuid.UUID, event: ProviderEvent) -> bool:
        assert event.status is not None
        statement = (
            pg_insert(email_history)
            .values(
                email_id=email_id,
                status=event.status,
                provider=event.provider,
                detail=event.detail(),
                provider_event_id=event.event_id,
            )
            .on_conflict_do_nothing(
                index_elements=[email_history.c.provider, email_history.c.provider_event_id],
                index_where=email_history.c.provider_event_id.is_not(None),
            )
            .returning(email_history.c.id)
        )
        return (await self.connection.scalar(statement)) is not None

    async def move_status(self, email_id: uuid.UUID, status: EmailStatus) -> None:
        await self.connection.execute(
            update(emails)
            .where(emails.c.id == email_id)
            .values(status=status, lease_expires_at=None, updated_at=func.now())
        )

    async def suppress(
        self,
        tenant_id: str,
        address: str,
        reason: SuppressionReason,
        event: ProviderEvent,
        email_id: uuid.UUID,
    ) -> None:
        await self.connection.execute(
            pg_insert(suppressions)
            .values(
                tenant_id=tenant_id,
                email=address.lower(),
                reason=reason,
                detail=f"{event.provider} {event.kind}",
                email_id=email_id,
                provider=event.provider,
            )
            .on_conflict_do_nothing(index_elements=[suppressions.c.tenant_id, suppressions.c.email])
        )


class ProviderEventStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresEventTransaction]:
        async with self._engine.begin() as connection:
            yield PostgresEventTransaction(connection)


@dataclass(frozen=True)
class SuppressionPage:
    rows: list[AnyRow]
    next_cursor: str | None


def encode_cursor(created_at: datetime, address: str) -> str:
    raw = f"{created_at.isoformat()}|{address}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, address = raw.split("|", 1)
        if "\x00" in address or len(address) > 320:
            raise ValueError("not an address this API stores")
        return datetime.fromisoformat(created_at), address
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidCursorError("cursor is not one this API returned") from error


_COLUMNS = (
    suppressions.c.email,
    suppressions.c.reason,
    suppressions.c.detail,
    suppressions.c.email_id,
    suppressions.c.provider,
    suppressions.c.created_at,
)


class SuppressionStore:
    """A tenant's suppression list; addresses are lower-case."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def page(self, tenant_id: str, limit: int, cursor: str | None) -> SuppressionPage:
        """Newest first, like GET /v1/emails."""
        query = select(*_COLUMNS).where(suppressions.c.tenant_id == tenant_id)
        if cursor is not None:
            created_at, address = decode_cursor(cursor)
            query = query.where(
                or_(
                    suppressions.c.created_at < created_at,
                    and_(suppressions.c.created_at == created_at, suppressions.c.email < address),
                )
            )
        query = query.order_by(suppressions.c.created_at.desc(), suppressions.c.email.desc())
        async with self._engine.connect() as connection:
            rows = list(await connection.execute(query.limit(limit + 1)))
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = encode_cursor(rows[-1].created_at, rows[-1].email)
        return SuppressionPage(rows, next_cursor)

    async def add(self, tenant_id: str, address: str, reason: str) -> tuple[AnyRow, bool]:
        """The address's entry and whether this call created it (an existing one is kept)."""
        values: dict[str, Any] = {
            "tenant_id": tenant_id,
            "email": address.lower(),
            "reason": reason,
            "detail": "added through the API",
        }
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    pg_insert(suppressions)
                    .values(**values)
                    .on_conflict_do_nothing(
                        index_elements=[suppressions.c.tenant_id, suppressions.c.email]
                    )
                    .returning(*_COLUMNS)
                )
            ).first()
            if row is not None:
                return row, True
            existing = (
                await connection.execute(
                    select(*_COLUMNS).where(
                        suppressions.c.tenant_id == tenant_id,
                        suppressions.c.email == address.lower(),
                    )
                )
            ).one()
            return existing, False

    async def remove(self, tenant_id: str, address: str) -> bool:
        async with self._engine.begin() as connection:
            result = await connection.execute(
                delete(suppressions).where(
                    suppressions.c.tenant_id == tenant_id,
                    suppressions.c.email == address.lower(),
                )
            )
            return bool(result.rowcount)
