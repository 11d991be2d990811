"""The dispatcher's SQL: claiming due events with a lease, and recording each attempt.

Every statement takes `now` from the dispatcher's clock (not the database's), so a test can move
time forward: a retry schedule of hours, or an endpoint failing for three days.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mailstack_core.tables import webhook_deliveries, webhook_endpoints, webhook_events


@dataclass(frozen=True)
class ClaimedEvent:
    id: str
    endpoint_id: uuid.UUID
    type: str
    payload: dict[str, Any]
    attempts: int  # this attempt's number (1: the first)
    created_at: datetime
    url: str
    secret: str


@dataclass(frozen=True)
class Attempt:
    """What one attempt ended in."""

    at: datetime
    duration_ms: int
    status_code: int | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class Backlog:
    due: int
    oldest_due_age_seconds: float


def _pending() -> Any:
    return and_(webhook_events.c.delivered_at.is_(None), webhook_events.c.gave_up_at.is_(None))


class WebhookOutbox:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def claim(self, now: datetime, limit: int, lease: timedelta) -> list[ClaimedEvent]:
        """Up to `limit` due events of enabled endpoints, oldest due first, each held until
        `now + lease` (other dispatchers skip them; if this one dies, the lease lapses)."""
        due = (
            select(webhook_events.c.id)
            .join(webhook_endpoints, webhook_endpoints.c.id == webhook_events.c.endpoint_id)
            .where(_pending(), webhook_events.c.next_attempt_at <= now, webhook_endpoints.c.enabled)
            .order_by(webhook_events.c.next_attempt_at)
            .limit(limit)
            .with_for_update(of=webhook_events, skip_locked=True)
            .cte("due")
        )
        statement = (
            update(webhook_events)
            .where(webhook_events.c.id == due.c.id)
            .where(webhook_endpoints.c.id == webhook_events.c.endpoint_id)
            .values(next_attempt_at=now + lease, attempts=webhook_events.c.attempts + 1)
            .returning(
                webhook_events.c.id,
                webhook_events.c.endpoint_id,
                webhook_events.c.type,
                webhook_events.c.payload,
                webhook_events.c.attempts,
                webhook_events.c.created_at,
                webhook_endpoints.c.url,
                webhook_endpoints.c.secret,
            )
        )
        async with self._engine.begin() as connection:
            rows = await connection.execute(statement)
            return [ClaimedEvent(**row._mapping) for row in rows]

    async def record(
        self,
        event: ClaimedEvent,
        attempt: Attempt,
        retry_at: datetime | None,
        disable_after: timedelta,
    ) -> tuple[bool, bool]:
        """Record the attempt; on failure, the next one at `retry_at` (None: give up), and the
        endpoint disabled once it has failed for `disable_after` without a success. Returns
        (gave up, disabled the endpoint now)."""
        now = attempt.at
        async with self._engine.begin() as connection:
            await connection.execute(
                insert(webhook_deliveries).values(
                    event_id=event.id,
                    endpoint_id=event.endpoint_id,
                    attempted_at=now,
                    status_code=attempt.status_code,
                    error=attempt.error,
                    duration_ms=attempt.duration_ms,
                )
            )
            this_event = webhook_events.c.id == event.id
            endpoint = webhook_endpoints.c.id == event.endpoint_id
            if attempt.delivered:
                await connection.execute(
                    update(webhook_events)
                    .where(this_event)
                    .values(delivered_at=now, last_error=None)
                )
                await connection.execute(
                    update(webhook_endpoints).where(endpoint).values(first_failure_at=None)
                )
                return False, False
            error = attempt.error or f"HTTP {attempt.status_code}"
            values: dict[str, Any] = {"last_error": error}
            values |= {"next_attempt_at": retry_at} if retry_at else {"gave_up_at": now}
            await connection.execute(update(webhook_events).where(this_event).values(**values))
            state = (
                await connection.execute(
                    select(webhook_endpoints.c.enabled, webhook_endpoints.c.first_failure_at)
                    .where(endpoint)
                    .with_for_update()
                )
            ).first()
            if state is None:  # deleted meanwhile
                return retry_at is None, False
            since = state.first_failure_at or now
            disabled = state.enabled and since <= now - disable_after
            changes: dict[str, Any] = {"first_failure_at": since}
            if disabled:
                changes |= {
                    "enabled": False,
                    "disabled_reason": f"failing since {since.isoformat()} with no successful "
                    f"delivery; last error: {error[:200]}",
                }
            await connection.execute(update(webhook_endpoints).where(endpoint).values(**changes))
            return retry_at is None, bool(disabled)

    async def backlog(self, now: datetime) -> Backlog:
        query = (
            select(func.count(), func.min(webhook_events.c.next_attempt_at))
            .join(webhook_endpoints, webhook_endpoints.c.id == webhook_events.c.endpoint_id)
            .where(_pending(), webhook_events.c.next_attempt_at <= now, webhook_endpoints.c.enabled)
        )
        async with self._engine.connect() as connection:
            count, oldest = (await connection.execute(query)).one()
        age = (now - oldest).total_seconds() if oldest is not None else 0.0
        return Backlog(int(count), max(age, 0.0))

    async def ping(self) -> None:
        async with self._engine.connect() as connection:
            await connection.scalar(select(1))
