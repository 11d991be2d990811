"""The webhook outbox on the real Postgres: the history trigger writes one event per subscribed
endpoint in the history row's transaction, claims are exclusive and leased, and an endpoint
that fails for three days (a clock the test moves) is disabled."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mailstack_core import webhooks as hooks
from mailstack_core.database import normalize_database_url
from mailstack_core.tables import (
    email_history,
    emails,
    tenants,
    webhook_deliveries,
    webhook_endpoints,
    webhook_events,
)
from mailstack_processor.webhooks.dispatcher import Dispatcher, RetryPolicy
from mailstack_processor.webhooks.network import guarded_client
from mailstack_processor.webhooks.store import Attempt, WebhookOutbox

pytestmark = pytest.mark.integration

LEASE = timedelta(seconds=60)
DISABLE_AFTER = timedelta(days=3)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(normalize_database_url(database_url), pool_size=5)
    yield engine
    await engine.dispose()


async def _endpoint(
    engine: AsyncEngine, tenant: str, events: list[str], enabled: bool = True
) -> uuid.UUID:
    endpoint_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(pg_insert(tenants).values(id=tenant).on_conflict_do_nothing())
        await connection.execute(
            insert(webhook_endpoints).values(
                id=endpoint_id,
                tenant_id=tenant,
                url=f"https://{tenant}.example.org/hook",
                events=events,
                secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                enabled=enabled,
            )
        )
    return endpoint_id


async def _email(engine: AsyncEngine, tenant: str, statuses: list[str]) -> uuid.UUID:
    """An email of `tenant` and one history row per status, each in its own transaction."""
    email_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(pg_insert(tenants).values(id=tenant).on_conflict_do_nothing())
        await connection.execute(
            insert(emails).values(
                id=email_id,
                tenant_id=tenant,
                sender_email="app@example.com",
                to_recipients=[{"email": "user@example.com"}],
                subject="Hello",
                text_body="Hi",
                status=statuses[0],
                request_body="{}",
                tags=["welcome"],
                metadata={"order": "42"},
            )
        )
    for status in statuses:
        async with engine.begin() as connection:
            await connection.execute(
                insert(email_history).values(
                    email_id=email_id,
                    status=status,
                    provider="sendgrid" if status == "SENT" else None,
                    detail={"attempt": 1, "raw": {"nested": "dropped"}, "note": "ok"},
                )
            )
    return email_id


async def _events(engine: AsyncEngine, endpoint_id: uuid.UUID) -> list[Any]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(webhook_events)
            .where(webhook_events.c.endpoint_id == endpoint_id)
            .order_by(webhook_events.c.history_id)
        )
        return list(rows)


async def test_each_history_row_becomes_one_event_per_subscribed_enabled_endpoint(
    engine: AsyncEngine,
) -> None:
    sent_only = await _endpoint(engine, "acme", ["email.sent"])
    everything = await _endpoint(engine, "acme", ["*"])
    disabled = await _endpoint(engine, "acme", ["*"], enabled=False)
    other_tenant = await _endpoint(engine, "globex", ["*"])

    email_id = await _email(engine, "acme", ["QUEUED", "PROCESSING", "SENT"])

    assert [e.type for e in await _events(engine, everything)] == [
        "email.queued",
        "email.processing",
        "email.sent",
    ]
    [sent] = await _events(engine, sent_only)
    assert await _events(engine, disabled) == []
    assert await _events(engine, other_tenant) == []
    assert sent.id.startswith("msg_")
    assert sent.email_id == email_id
    assert sent.payload["type"] == "email.sent"
    assert sent.payload["timestamp"].endswith("Z")
    assert sent.payload["data"] == {
        "email_id": str(email_id),
        "status": "SENT",
        "provider": "sendgrid",
        "detail": {"attempt": 1, "note": "ok"},
        "tags": ["welcome"],
        "metadata": {"order": "42"},
    }
    ids = [e.id for e in await _events(engine, everything)]
    assert len(set(ids)) == 3


async def test_a_history_row_rolled_back_leaves_no_event(engine: AsyncEngine) -> None:
    endpoint = await _endpoint(engine, "acme", ["*"])
    email_id = await _email(engine, "acme", ["QUEUED"])
    async with engine.connect() as connection:
        transaction = await connection.begin()
        await connection.execute(insert(email_history).values(email_id=email_id, status="SENT"))
        await transaction.rollback()
    assert [e.type for e in await _events(engine, endpoint)] == ["email.queued"]


async def test_claims_are_exclusive_and_leased(engine: AsyncEngine) -> None:
    await _endpoint(engine, "acme", ["*"])
    for _ in range(5):
        await _email(engine, "acme", ["QUEUED", "SENT"])
    outbox = WebhookOutbox(engine)
    now = datetime.now(UTC) + timedelta(seconds=1)

    first, second = await asyncio.gather(outbox.claim(now, 6, LEASE), outbox.claim(now, 6, LEASE))
    claimed = [e.id for e in first + second]
    assert len(claimed) == 10
    assert len(set(claimed)) == 10
    assert all(e.attempts == 1 for e in first + second)
    assert await outbox.claim(now + LEASE - timedelta(seconds=1), 10, LEASE) == []
    # A dispatcher that died holds nothing past its lease: the events are claimed again.
    again = await outbox.claim(now + LEASE + timedelta(seconds=1), 10, LEASE)
    assert sorted(e.id for e in again) == sorted(claimed)
    assert all(e.attempts == 2 for e in again)


async def test_a_delivered_event_is_done_and_a_failed_one_waits_for_its_retry(
    engine: AsyncEngine,
) -> None:
    endpoint = await _endpoint(engine, "acme", ["email.queued"])
    await _email(engine, "acme", ["QUEUED"])
    await _email(engine, "acme", ["QUEUED"])
    outbox = WebhookOutbox(engine)
    now = datetime.now(UTC) + timedelta(seconds=1)
    ok, failing = await outbox.claim(now, 2, LEASE)

    await outbox.record(ok, Attempt(now, 12, 204), None, DISABLE_AFTER)
    retry_at = now + timedelta(seconds=4)
    await outbox.record(failing, Attempt(now, 30, 503), retry_at, DISABLE_AFTER)

    assert await outbox.claim(now + timedelta(seconds=3), 10, LEASE) == []
    [retried] = await outbox.claim(retry_at, 10, LEASE)
    assert retried.id == failing.id
    async with engine.connect() as connection:
        attempts = list(
            await connection.execute(
                select(webhook_deliveries).where(webhook_deliveries.c.endpoint_id == endpoint)
            )
        )
        failing_since = await connection.scalar(
            select(webhook_endpoints.c.first_failure_at).where(webhook_endpoints.c.id == endpoint)
        )
    assert sorted((a.status_code, a.duration_ms) for a in attempts) == [(204, 12), (503, 30)]
    assert failing_since == now


class ShiftedClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


async def test_an_endpoint_failing_for_three_days_is_disabled_and_says_why(
    engine: AsyncEngine,
) -> None:
    """Driven by the real dispatcher against a real closed port (nothing listens there)."""
    endpoint = await _endpoint(engine, "acme", ["*"])
    async with engine.begin() as connection:
        await connection.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == endpoint)
            .values(url="http://127.0.0.1:9/hook")
        )
    await _email(engine, "acme", ["QUEUED"])
    clock = ShiftedClock(datetime.now(UTC) + timedelta(seconds=1))
    client = guarded_client(hooks.parse_networks("127.0.0.0/8"), 2, 2)
    dispatcher = Dispatcher(
        WebhookOutbox(engine),
        client,
        RetryPolicy(disable_after=DISABLE_AFTER, max_event_age=timedelta(days=4)),
        http_hosts=["127.0.0.1"],
        clock=clock,
    )
    outbox = WebhookOutbox(engine)
    start = clock.now
    try:
        while clock.now - start < DISABLE_AFTER + timedelta(hours=2):
            [event] = await outbox.claim(clock.now, 10, LEASE)
            await dispatcher.deliver(event)
            async with engine.connect() as connection:
                state = (
                    await connection.execute(
                        select(webhook_endpoints, webhook_events.c.next_attempt_at)
                        .join(webhook_events)
                        .where(webhook_endpoints.c.id == endpoint)
                    )
                ).one()
            if not state.enabled:
                break
            assert clock.now - start < DISABLE_AFTER, "still enabled after three days"
            clock.now = state.next_attempt_at
    finally:
        await client.aclose()

    assert clock.now - start >= DISABLE_AFTER
    assert state.disabled_reason.startswith("failing since ")
    assert "ConnectError" in state.disabled_reason
    # Disabled: its events are no longer claimed.
    assert await outbox.claim(clock.now + timedelta(days=1), 10, LEASE) == []


async def test_a_success_resets_the_failure_clock(engine: AsyncEngine) -> None:
    endpoint = await _endpoint(engine, "acme", ["*"])
    for _ in range(3):
        await _email(engine, "acme", ["QUEUED"])
    outbox = WebhookOutbox(engine)
    start = datetime.now(UTC) + timedelta(seconds=1)
    first, second, third = await outbox.claim(start, 3, LEASE)
    later = start + timedelta(days=2)
    await outbox.record(first, Attempt(start, 5, 500), later, DISABLE_AFTER)
    await outbox.record(second, Attempt(later, 5, 200), None, DISABLE_AFTER)
    gave_up, disabled = await outbox.record(
        third, Attempt(start + timedelta(days=4), 5, 500), None, DISABLE_AFTER
    )
    assert (gave_up, disabled) == (True, False)
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint)
            )
        ).one()
    assert row.enabled
    assert row.first_failure_at == start + timedelta(days=4)
