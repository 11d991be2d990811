"""What the console reads besides emails: the providers' circuit breakers and the tenant's
sends per minute. Read-only; the engine may be a replica."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mailstack_core.status import EmailStatus
from mailstack_core.tables import email_history, emails, provider_breakers

WINDOW_MINUTES = 60


class BreakerState(StrEnum):
    CLOSED = "closed"  # no failure since the last success
    FAILING = "failing"  # failures, not yet enough to open
    OPEN = "open"  # skipped until `opened_until`
    HALF_OPEN = "half-open"  # the cool-down is over: the next delivery probes it


@dataclass(frozen=True)
class Breaker:
    """One row of `provider_breakers`, as the processors share it (migration 0002)."""

    provider: str
    consecutive_failures: int
    opened_until: datetime | None
    last_error: str | None
    updated_at: datetime

    def state(self, now: datetime) -> BreakerState:
        # The processors open a circuit by setting `opened_until` and close it by clearing it
        # (a success); in between, once it has passed, the circuit is half-open.
        if self.opened_until is not None:
            return BreakerState.OPEN if self.opened_until > now else BreakerState.HALF_OPEN
        return BreakerState.FAILING if self.consecutive_failures > 0 else BreakerState.CLOSED


@dataclass(frozen=True)
class MinuteCount:
    """Of the tenant's history in one minute, for one provider (None: no provider named)."""

    minute: datetime
    provider: str | None
    sent: int
    failed: int


def window_start(now: datetime) -> datetime:
    """The first minute of the last hour's WINDOW_MINUTES one-minute slots (the current one
    last)."""
    return now.replace(second=0, microsecond=0) - timedelta(minutes=WINDOW_MINUTES - 1)


class ConsoleQueries:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def breakers(self) -> list[Breaker]:
        query = select(
            provider_breakers.c.provider,
            provider_breakers.c.consecutive_failures,
            provider_breakers.c.opened_until,
            provider_breakers.c.last_error,
            provider_breakers.c.updated_at,
        ).order_by(provider_breakers.c.provider)
        async with self._engine.connect() as connection:
            rows = await connection.execute(query)
            return [Breaker(*row) for row in rows]

    async def activity(self, tenant_id: str, now: datetime) -> list[MinuteCount]:
        """SENT and FAILED history rows of the tenant's emails since `window_start(now)`, per
        minute and provider: one aggregate (the BRIN index on `at` finds the last hour)."""
        minute = func.date_trunc("minute", email_history.c.at).label("minute")
        status = email_history.c.status
        query = (
            select(
                minute,
                email_history.c.provider,
                func.count().filter(status == EmailStatus.SENT.value).label("sent"),
                func.count().filter(status == EmailStatus.FAILED.value).label("failed"),
            )
            .join(emails, emails.c.id == email_history.c.email_id)
            .where(
                emails.c.tenant_id == tenant_id,
                email_history.c.at >= window_start(now),
                status.in_([EmailStatus.SENT.value, EmailStatus.FAILED.value]),
            )
            .group_by(minute, email_history.c.provider)
            .order_by(minute)
        )
        async with self._engine.connect() as connection:
            rows = await connection.execute(query)
            return [MinuteCount(*row) for row in rows]
