"""The providers' circuit breakers as the processors share them (table provider_breakers).

The gateway only reads them, for operators (`GET /v1/admin/breakers`); the processors write
them (mailstack_processor.repository.PostgresCircuitBreakers). A provider that has never failed
has no row: its breaker is closed.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mailstack_core.tables import provider_breakers


class BreakerPosition(StrEnum):
    # Calls go through; failures so far (if any) are below the processors' threshold.
    CLOSED = "closed"
    # Skipped by every processor until `opened_until`.
    OPEN = "open"
    # The cool-down is over: the next call is a probe that closes or opens it again.
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Breaker:
    provider: str
    position: BreakerPosition
    consecutive_failures: int
    opened_until: datetime | None
    last_error: str | None
    updated_at: datetime
    # The database's clock when it was read: open or not is judged on it, not the gateway's.
    read_at: datetime


def position(opened_until: datetime | None, now: datetime) -> BreakerPosition:
    """A success clears `opened_until`; until then, a past one means the cool-down is over."""
    if opened_until is None:
        return BreakerPosition.CLOSED
    return BreakerPosition.OPEN if opened_until > now else BreakerPosition.HALF_OPEN


class BreakerReader:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def breakers(self) -> list[Breaker]:
        async with self._engine.connect() as connection:
            now: datetime = (await connection.execute(select(func.now()))).scalar_one()
            rows = await connection.execute(
                select(provider_breakers).order_by(provider_breakers.c.provider)
            )
            return [
                Breaker(
                    provider=row.provider,
                    position=position(row.opened_until, now),
                    consecutive_failures=row.consecutive_failures,
                    opened_until=row.opened_until,
                    last_error=row.last_error,
                    updated_at=row.updated_at,
                    read_at=now,
                )
                for row in rows
            ]
