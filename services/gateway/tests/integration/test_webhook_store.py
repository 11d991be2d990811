"""WebhookStore.enable on the real Postgres: a disabled endpoint is enabled again for its own
tenant only; its waiting events stay due and its given-up events stay given up."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mailstack_core.tables import tenants, webhook_endpoints, webhook_events
from mailstack_gateway.webhooks import WebhookStore

pytestmark = pytest.mark.integration

TENANT = "acme"
OTHER = "globex"
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)


async def _disabled_endpoint(engine: AsyncEngine, store: WebhookStore) -> uuid.UUID:
    row = await store.create(TENANT, "https://example.org/hook", ["*"], "whsec_x")
    async with engine.begin() as connection:
        await connection.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == row.id)
            .values(
                enabled=False, disabled_reason="no success for 3 days", first_failure_at=LONG_AGO
            )
        )
        for event_id, gave_up_at in (("msg_waiting", None), ("msg_given_up", LONG_AGO)):
            await connection.execute(
                insert(webhook_events).values(
                    id=event_id,
                    endpoint_id=row.id,
                    type="email.sent",
                    payload={"type": "email.sent"},
                    created_at=LONG_AGO,
                    next_attempt_at=LONG_AGO + timedelta(hours=1),
                    attempts=3,
                    gave_up_at=gave_up_at,
                )
            )
    return row.id


async def test_enable_clears_the_failures_and_keeps_the_events_as_they_were(
    engine: AsyncEngine,
) -> None:
    store = WebhookStore(engine)
    endpoint_id = await _disabled_endpoint(engine, store)

    enabled = await store.enable(TENANT, endpoint_id)

    assert enabled is not None
    assert (enabled.enabled, enabled.disabled_reason, enabled.first_failure_at) == (
        True,
        None,
        None,
    )
    async with engine.connect() as connection:
        events = {
            row.id: row
            for row in await connection.execute(
                select(webhook_events).where(webhook_events.c.endpoint_id == endpoint_id)
            )
        }
    # Waiting: due (next_attempt_at in the past), so the dispatcher claims it at once.
    assert events["msg_waiting"].gave_up_at is None
    assert events["msg_waiting"].delivered_at is None
    assert events["msg_waiting"].next_attempt_at < datetime.now(UTC)
    assert events["msg_given_up"].gave_up_at == LONG_AGO
    # Again: the same answer.
    again = await store.enable(TENANT, endpoint_id)
    assert again is not None
    assert again.enabled is True


async def test_another_tenant_cannot_enable_it(engine: AsyncEngine) -> None:
    store = WebhookStore(engine)
    endpoint_id = await _disabled_endpoint(engine, store)
    async with engine.begin() as connection:
        await connection.execute(insert(tenants).values(id=OTHER))

    assert await store.enable(OTHER, endpoint_id) is None
    assert await store.enable(TENANT, uuid.uuid4()) is None

    row = await store.get(TENANT, endpoint_id)
    assert row is not None
    assert (row.enabled, row.disabled_reason) == (False, "no success for 3 days")
