"""The reconciler's query on the real Postgres: which emails count as stranded, and what
republishing one writes."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mailstack_core import metrics
from mailstack_core.outcomes import Outcome
from mailstack_core.status import EmailStatus
from mailstack_core.tables import email_history, email_outbox, emails
from mailstack_gateway import outbox
from mailstack_gateway.intake import parse_email
from mailstack_gateway.repository import EmailWriter

pytestmark = pytest.mark.integration

TENANT = "acme"
AFTER = 60.0
REQUEST = {
    "from": {"email": "a@example.com"},
    "to": [{"email": "b@example.com"}],
    "subject": "Hi",
    "text": "Hi",
}


async def _email(
    engine: AsyncEngine,
    writer: EmailWriter,
    *,
    status: EmailStatus = EmailStatus.QUEUED,
    idle_seconds: float = 0,
    lease_lapsed_seconds: float | None = None,
    published: bool = True,
    retry_in_seconds: float | None = None,
) -> uuid.UUID:
    """An accepted email, as the processor and the relay would have left it."""
    email_id = uuid.uuid4()
    await writer.save_queued(TENANT, email_id, parse_email(REQUEST), "{}")
    async with engine.begin() as connection:
        if published:
            await connection.execute(
                email_outbox.delete().where(email_outbox.c.email_id == email_id)
            )
        if retry_in_seconds is not None:
            await connection.execute(
                insert(email_history).values(
                    email_id=email_id,
                    status=EmailStatus.QUEUED,
                    detail={
                        "outcome": Outcome.RETRY_SCHEDULED,
                        "retry_in_seconds": retry_in_seconds,
                    },
                    at=text(f"now() - interval '{idle_seconds} seconds'"),
                )
            )
        lease: Any = None
        if lease_lapsed_seconds is not None:
            lease = text(f"now() - interval '{lease_lapsed_seconds} seconds'")
        await connection.execute(
            update(emails)
            .where(emails.c.id == email_id)
            .values(
                status=status,
                lease_expires_at=lease,
                updated_at=text(f"now() - interval '{idle_seconds} seconds'"),
            )
        )
    return email_id


async def _outcomes(engine: AsyncEngine, email_id: uuid.UUID) -> list[str | None]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(email_history.c.detail["outcome"].astext)
            .where(email_history.c.email_id == email_id)
            .order_by(email_history.c.id)
        )
        return [row[0] for row in rows]


async def test_republishes_only_the_emails_with_no_sign_of_life(
    engine: AsyncEngine, writer: EmailWriter
) -> None:
    stranded = await _email(engine, writer, idle_seconds=AFTER + 30)
    fresh = await _email(engine, writer, idle_seconds=AFTER - 30)
    unpublished = await _email(engine, writer, idle_seconds=AFTER + 30, published=False)
    lapsed = await _email(
        engine,
        writer,
        status=EmailStatus.PROCESSING,
        idle_seconds=AFTER + 300,
        lease_lapsed_seconds=AFTER + 10,
    )
    live_claim = await _email(
        engine,
        writer,
        status=EmailStatus.PROCESSING,
        idle_seconds=AFTER + 300,
        lease_lapsed_seconds=-30,  # the claim is still valid for 30 s
    )
    recently_lapsed = await _email(
        engine,
        writer,
        status=EmailStatus.PROCESSING,
        idle_seconds=AFTER + 300,
        lease_lapsed_seconds=AFTER - 30,
    )
    in_backoff = await _email(engine, writer, idle_seconds=AFTER + 30, retry_in_seconds=300)
    backoff_over = await _email(engine, writer, idle_seconds=AFTER + 330, retry_in_seconds=300)
    sent = await _email(engine, writer, status=EmailStatus.SENT, idle_seconds=AFTER * 100)

    republished = await writer.republish_stranded(AFTER, limit=100)

    assert set(republished) == {stranded, lapsed, backoff_over}
    for email_id in (fresh, unpublished, live_claim, recently_lapsed, in_backoff, sent):
        assert Outcome.REPUBLISHED not in await _outcomes(engine, email_id)
    async with engine.connect() as connection:
        due = set(await connection.scalars(select(email_outbox.c.email_id)))
    assert {stranded, lapsed, backoff_over} <= due
    assert (await _outcomes(engine, stranded))[-1] == Outcome.REPUBLISHED


async def test_a_republished_email_waits_a_whole_threshold_before_the_next_time(
    engine: AsyncEngine, writer: EmailWriter
) -> None:
    email_id = await _email(engine, writer, idle_seconds=AFTER + 30)
    assert await outbox.reconcile_once(writer, AFTER, limit=100) == 1
    async with engine.begin() as connection:
        await connection.execute(email_outbox.delete())  # the relay published it

    assert await outbox.reconcile_once(writer, AFTER, limit=100) == 0
    assert (await _outcomes(engine, email_id)).count(Outcome.REPUBLISHED) == 1


async def test_rounds_are_bounded_and_oldest_first(
    engine: AsyncEngine, writer: EmailWriter
) -> None:
    ids = [await _email(engine, writer, idle_seconds=AFTER + 100 - n) for n in range(5)]

    first = await writer.republish_stranded(AFTER, limit=2)
    rest = await writer.republish_stranded(AFTER, limit=10)

    assert first == ids[:2]
    assert set(rest) == set(ids[2:])
    async with engine.connect() as connection:
        count = await connection.scalar(select(func.count()).select_from(email_outbox))
    assert count == 5


async def test_never_republishes_a_scheduled_or_canceled_email(
    engine: AsyncEngine, writer: EmailWriter
) -> None:
    send_at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    scheduled, canceled = uuid.uuid4(), uuid.uuid4()
    await writer.save_queued(TENANT, scheduled, parse_email(REQUEST | {"send_at": send_at}), "{}")
    await writer.save_queued(TENANT, canceled, parse_email(REQUEST), "{}")
    assert await writer.cancel(TENANT, canceled) is not None
    async with engine.begin() as connection:  # both untouched far longer than the threshold
        await connection.execute(
            update(emails)
            .where(emails.c.id.in_([scheduled, canceled]))
            .values(updated_at=text(f"now() - interval '{AFTER * 100} seconds'"))
        )

    assert await outbox.reconcile_once(writer, AFTER, limit=100) == 0
    for email_id in (scheduled, canceled):
        assert Outcome.REPUBLISHED not in await _outcomes(engine, email_id)
    async with engine.connect() as connection:
        assert set(await connection.scalars(select(email_outbox.c.email_id))) == set()


async def test_the_outbox_gauges_show_its_depth_and_the_age_of_its_oldest_row(
    engine: AsyncEngine, writer: EmailWriter
) -> None:
    assert await outbox.measure_backlog(writer) == outbox.OutboxBacklog(0, 0.0)
    await _email(engine, writer, published=True)
    oldest = await _email(engine, writer, published=False)
    await _email(engine, writer, published=False)
    async with engine.begin() as connection:
        await connection.execute(
            update(email_outbox)
            .where(email_outbox.c.email_id == oldest)
            .values(created_at=text("now() - interval '90 seconds'"))
        )

    backlog = await outbox.measure_backlog(writer)

    assert backlog.depth == 2
    assert 90 <= backlog.oldest_age_seconds < 120
    assert REGISTRY.get_sample_value(metrics.GATEWAY_OUTBOX_DEPTH.name) == 2
    assert REGISTRY.get_sample_value(metrics.GATEWAY_OUTBOX_OLDEST_AGE.name) == pytest.approx(
        backlog.oldest_age_seconds
    )
