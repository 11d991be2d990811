"""The load balancer's probe, on the real Postgres: ready only on a reachable, current schema."""

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from mailstack_core.database import normalize_database_url
from mailstack_core.migrate import downgrade
from mailstack_gateway.main import create_app, schema_check
from mailstack_gateway.settings import GatewaySettings
from mailstack_testing.fixtures import cloned_database

pytestmark = pytest.mark.integration

UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing listens there


async def deep_health(database_url: str) -> httpx.Response:
    settings = GatewaySettings(
        database_url=database_url,
        email_queue_url=f"{UNREACHABLE}/000000000000/emails",
        attachments_bucket="mailstack-attachments",
        aws_endpoint_url=UNREACHABLE,
        database_timeout_seconds=1,
    )
    app = create_app(settings, run_relay=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        return await client.get("/healthz?deep=1")


async def test_ready_on_a_migrated_database(database_url: str) -> None:
    response = await deep_health(database_url)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_not_ready_while_the_schema_is_behind_the_code(database_url: str) -> None:
    """New tasks before the migration ran: they would answer 500 on a missing table."""
    downgrade(database_url, "0004")
    assert (await deep_health(database_url)).status_code == 503
    downgrade(database_url, "base")
    assert (await deep_health(database_url)).status_code == 503


async def test_a_database_never_migrated_is_behind_not_broken(postgres_admin_url: str) -> None:
    """No alembic_version table at all: the check answers "not current" instead of failing."""
    with cloned_database(postgres_admin_url, "template0") as url:
        engine = create_async_engine(normalize_database_url(url))
        try:
            assert await schema_check(engine)() is False
        finally:
            await engine.dispose()


async def test_not_ready_without_a_database() -> None:
    response = await deep_health("postgresql://postgres@127.0.0.1:9/nowhere")
    assert (response.status_code, response.json()) == (503, {"status": "unavailable"})
