"""Integration tests talk to LocalStack, which accepts any credentials but needs some, and to a
fresh migrated Postgres database per test (`database_url`)."""

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import Engine, create_engine, insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mailstack_core.database import normalize_database_url
from mailstack_core.tables import tenants
from mailstack_gateway.repository import EmailWriter


@pytest.fixture(autouse=True)
def _localstack_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
async def engine(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test's database, where the tenant the test module names (`TENANT`)
    exists."""
    engine = create_async_engine(normalize_database_url(database_url))
    async with engine.begin() as connection:
        await connection.execute(insert(tenants).values(id=request.module.TENANT))
    yield engine
    await engine.dispose()


@pytest.fixture
def writer(engine: AsyncEngine) -> EmailWriter:
    """The gateway's writer, publishing without grace (the outbox relay may take a row at once)."""
    return EmailWriter(engine, outbox_grace_seconds=0, outbox_max_backoff_seconds=60)


@pytest.fixture
def sync_engine(database_url: str) -> Iterator[Engine]:
    """A synchronous engine on the test's database (the key admin's, `mailstack-admin`'s)."""
    engine = create_engine(normalize_database_url(database_url))
    yield engine
    engine.dispose()
