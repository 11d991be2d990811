"""Circuit breakers in Postgres: shared state, opening at the threshold, probing after cool-down."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mailstack_core.database import normalize_database_url
from mailstack_core.tables import provider_breakers
from mailstack_processor.repository import PostgresCircuitBreakers

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(normalize_database_url(database_url))
    yield engine
    await engine.dispose()


async def test_opens_at_the_threshold_for_every_instance(engine: AsyncEngine) -> None:
    first = PostgresCircuitBreakers(engine, threshold=3, cooldown_seconds=30)
    second = PostgresCircuitBreakers(engine, threshold=3, cooldown_seconds=30)

    assert await first.record_failure("elasticemail", "timeout") is False
    assert await second.record_failure("elasticemail", "timeout") is False
    assert await first.record_failure("elasticemail", "timeout") is True

    state = (await second.snapshot())["elasticemail"]
    assert state.consecutive_failures == 3
    assert 25 < state.open_for_seconds <= 30


async def test_concurrent_failures_are_all_counted(engine: AsyncEngine) -> None:
    breakers = PostgresCircuitBreakers(engine, threshold=100, cooldown_seconds=30)
    await asyncio.gather(*(breakers.record_failure("sendgrid", "HTTP 503") for _ in range(10)))
    assert (await breakers.snapshot())["sendgrid"].consecutive_failures == 10


async def test_a_success_closes_it_and_a_failed_probe_opens_it_again(engine: AsyncEngine) -> None:
    breakers = PostgresCircuitBreakers(engine, threshold=1, cooldown_seconds=30)
    assert await breakers.record_failure("elasticemail", "HTTP 500") is True
    async with engine.begin() as connection:  # the cool-down has passed: the next call probes
        await connection.execute(
            update(provider_breakers).values(opened_until=text("now() - interval '1 second'"))
        )
    assert (await breakers.snapshot())["elasticemail"].open_for_seconds == 0
    assert await breakers.record_failure("elasticemail", "HTTP 500") is True

    await breakers.record_success("elasticemail")
    state = (await breakers.snapshot())["elasticemail"]
    assert (state.consecutive_failures, state.open_for_seconds) == (0, 0)
