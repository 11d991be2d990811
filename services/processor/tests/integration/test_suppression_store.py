"""The processor's store and delivery truth, on the real Postgres: the claim's suppression
lookup, and a provider event that beat the processor's own SENT write."""

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mailstack_core.database import normalize_database_url
from mailstack_core.status import EmailStatus
from mailstack_core.tables import email_history, emails, suppressions, tenants
from mailstack_processor.delivery import ClaimState
from mailstack_processor.providers.base import SendReceipt
from mailstack_processor.repository import EmailDeliveryStore

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(normalize_database_url(database_url), pool_size=4)
    yield engine
    await engine.dispose()


async def _email(engine: AsyncEngine, tenant: str, status: str = "QUEUED") -> uuid.UUID:
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
                status=status,
                request_body="{}",
            )
        )
    return email_id


async def _suppress(engine: AsyncEngine, tenant: str, *addresses: str) -> None:
    async with engine.begin() as connection:
        for address in addresses:
            await connection.execute(
                insert(suppressions).values(tenant_id=tenant, email=address, reason="manual")
            )


async def test_the_claim_reads_which_recipients_the_emails_own_tenant_suppressed(
    engine: AsyncEngine,
) -> None:
    store = EmailDeliveryStore(engine)
    mine = await _email(engine, "acme")
    await _email(engine, "globex")
    async with engine.begin() as connection:
        await connection.execute(
            update(emails)
            .where(emails.c.id == mine)
            .values(
                to_recipients=[{"email": "User@Example.com"}, {"email": "Bounce@Example.org"}],
                cc_recipients=[{"email": "other@example.org"}],
                bcc_recipients=[{"email": "complaint@example.net", "name": "C"}],
            )
        )
    await _suppress(engine, "acme", "bounce@example.org", "complaint@example.net")
    await _suppress(engine, "acme", "nobody-here@example.org")
    await _suppress(engine, "globex", "user@example.com")
    unsuppressed = await _email(engine, "initech")

    claim = await store.claim(mine, lease_seconds=30, receive_count=1)
    clean = await store.claim(unsuppressed, lease_seconds=30, receive_count=1)

    assert claim.state is ClaimState.CLAIMED
    assert claim.suppressed == {"bounce@example.org", "complaint@example.net"}
    assert clean.state is ClaimState.CLAIMED
    assert clean.suppressed == frozenset()


async def test_a_delivered_event_that_came_before_the_sent_write_keeps_its_status(
    engine: AsyncEngine,
) -> None:
    store = EmailDeliveryStore(engine)
    email_id = await _email(engine, "acme")
    claim = await store.claim(email_id, 30, 1)
    assert claim.email is not None
    # The provider's webhook was faster than the processor's own write.
    async with engine.begin() as connection:
        await connection.execute(
            update(emails).where(emails.c.id == email_id).values(status=EmailStatus.DELIVERED)
        )

    await store.mark_sent(email_id, SendReceipt("sendgrid", "sg-1", http_status=202))

    async with engine.connect() as connection:
        row = (
            await connection.execute(
                select(emails.c.status, emails.c.provider_message_id).where(emails.c.id == email_id)
            )
        ).one()
        statuses = (
            await connection.execute(
                select(email_history.c.status)
                .where(email_history.c.email_id == email_id)
                .order_by(email_history.c.id)
            )
        ).scalars()
        assert list(statuses) == ["PROCESSING", "SENT"]
    assert row.status == EmailStatus.DELIVERED
    assert row.provider_message_id == "sg-1"
