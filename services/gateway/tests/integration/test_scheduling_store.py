"""Scheduled send and cancel on the real Postgres: the due-scheduler's claim, the cancel
statement, and the races each of them runs against other gateways and the processor.

The cancel-versus-claim race is between the gateway's cancel and the processor's claim, on one
row: this test runs both services' real statements (the only place a gateway test imports the
processor), since neither alone can show that exactly one of them wins.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mailstack_core.database import normalize_database_url
from mailstack_core.status import EmailStatus
from mailstack_core.tables import email_history, email_outbox, emails, tenants
from mailstack_gateway.intake import NewEmail, parse_email
from mailstack_gateway.repository import EmailWriter
from mailstack_processor.delivery import ClaimState
from mailstack_processor.repository import EmailDeliveryStore

pytestmark = pytest.mark.integration

TENANT = "acme"
OTHER_TENANT = "globex"


def _request(**overrides: Any) -> dict[str, Any]:
    return {
        "from": {"email": "app@example.com"},
        "to": [{"email": "user@example.com"}],
        "subject": "Hello",
        "text": "Hi",
    } | overrides


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(normalize_database_url(database_url), pool_size=10)
    async with engine.begin() as connection:
        await connection.execute(insert(tenants).values([{"id": TENANT}, {"id": OTHER_TENANT}]))
    yield engine
    await engine.dispose()


async def _scheduled(
    engine: AsyncEngine, writer: EmailWriter, count: int, *, due: bool = True
) -> list[uuid.UUID]:
    """SCHEDULED emails; `due`: their send_at is then moved a second into the past."""
    send_at = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    batch = [
        NewEmail(uuid.uuid4(), parse_email(_request(send_at=send_at)), "{}") for _ in range(count)
    ]
    for start in range(0, count, 100):
        await writer.save_batch(TENANT, batch[start : start + 100])
    ids = [new.id for new in batch]
    if due:
        async with engine.begin() as connection:
            await connection.execute(
                update(emails)
                .where(emails.c.id.in_(ids))
                .values(send_at=text("now() - interval '1 second'"))
            )
    return ids


async def _queued(writer: EmailWriter) -> uuid.UUID:
    email_id = uuid.uuid4()
    await writer.save_queued(TENANT, email_id, parse_email(_request()), "{}")
    return email_id


async def _status(engine: AsyncEngine, email_id: uuid.UUID) -> str:
    async with engine.connect() as connection:
        return str(await connection.scalar(select(emails.c.status).where(emails.c.id == email_id)))


async def _history(engine: AsyncEngine, email_id: uuid.UUID) -> list[tuple[str, str | None]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(email_history.c.status, email_history.c.detail["outcome"].astext)
            .where(email_history.c.email_id == email_id)
            .order_by(email_history.c.id)
        )
        return [(row[0], row[1]) for row in rows]


async def _outbox(engine: AsyncEngine) -> set[uuid.UUID]:
    async with engine.connect() as connection:
        return set(await connection.scalars(select(email_outbox.c.email_id)))


async def test_queues_only_due_scheduled_emails_once_with_a_history_and_an_outbox_row(
    engine: AsyncEngine, writer: EmailWriter
) -> None:
    due = await _scheduled(engine, writer, 3)
    later = await _scheduled(engine, writer, 1, due=False)
    [canceled] = await _scheduled(engine, writer, 1)
    await writer.cancel(TENANT, canceled)

    first = await writer.queue_due(limit=100)
    second = await writer.queue_due(limit=100)

    assert sorted(first) == sorted(due)
    assert second == []
    for email_id in due:
        assert await _status(engine, email_id) == "QUEUED"
        assert await _history(engine, email_id) == [("SCHEDULED", "accepted"), ("QUEUED", "due")]
    assert await _status(engine, later[0]) == "SCHEDULED"
    assert await _status(engine, canceled) == "CANCELED"
    assert await _outbox(engine) == set(due)


async def test_two_schedulers_queue_each_due_email_exactly_once(
    engine: AsyncEngine, database_url: str
) -> None:
    ids = await _scheduled(engine, EmailWriter(engine, 0, 60), 300)
    # Two gateways: two engines, two pools, rounds small enough to interleave.
    other = create_async_engine(normalize_database_url(database_url), pool_size=10)
    writers = [EmailWriter(engine, 0, 60), EmailWriter(other, 0, 60)]
    queued_by: list[list[uuid.UUID]] = [[], []]

    async def run(index: int) -> None:
        while batch := await writers[index].queue_due(limit=7):
            queued_by[index].extend(batch)

    try:
        await asyncio.gather(*(run(index) for index in (0, 1) for _ in range(3)))
    finally:
        await other.dispose()

    everything = queued_by[0] + queued_by[1]
    assert sorted(everything) == sorted(ids)  # each once: no id missing, none twice
    assert queued_by[0], "each scheduler should have taken a share"
    assert queued_by[1], "each scheduler should have taken a share"
    assert await _outbox(engine) == set(ids)
    async with engine.connect() as connection:
        due_rows = await connection.scalar(
            select(text("count(*)"))
            .select_from(email_history)
            .where(email_history.c.detail["outcome"].astext == "due")
        )
    assert due_rows == 300


@pytest.mark.parametrize("due", [False, True])
async def test_cancels_a_scheduled_or_queued_email_and_drops_its_outbox_row(
    engine: AsyncEngine, writer: EmailWriter, due: bool
) -> None:
    [email_id] = await _scheduled(engine, writer, 1, due=due)
    if due:
        assert await writer.queue_due(limit=10) == [email_id]
        assert await _outbox(engine) == {email_id}
    previous = "QUEUED" if due else "SCHEDULED"

    found = await writer.cancel(TENANT, email_id)

    assert found is not None
    assert (found.previous_status, found.canceled) == (EmailStatus(previous), True)
    assert await _status(engine, email_id) == "CANCELED"
    assert (await _history(engine, email_id))[-1] == ("CANCELED", "canceled")
    assert await _outbox(engine) == set()
    # Nothing picks it up again.
    assert await writer.queue_due(limit=10) == []
    assert await writer.republish_stranded(after_seconds=0, limit=10) == []


async def test_an_email_claimed_or_final_is_not_canceled_and_another_tenants_is_not_found(
    engine: AsyncEngine, writer: EmailWriter
) -> None:
    processing = await _queued(writer)
    await EmailDeliveryStore(engine).claim(processing, 30, 1)
    canceled = await _queued(writer)
    await writer.cancel(TENANT, canceled)

    claimed = await writer.cancel(TENANT, processing)
    again = await writer.cancel(TENANT, canceled)

    assert claimed is not None
    assert again is not None
    assert (claimed.previous_status, claimed.canceled) == (EmailStatus.PROCESSING, False)
    assert (again.previous_status, again.canceled) == (EmailStatus.CANCELED, False)
    assert await writer.cancel(OTHER_TENANT, processing) is None
    assert await writer.cancel(TENANT, uuid.uuid4()) is None
    assert [status for status, _ in await _history(engine, canceled)].count("CANCELED") == 1


async def test_a_cancel_and_a_processor_claim_racing_for_one_email_never_both_win(
    engine: AsyncEngine, writer: EmailWriter
) -> None:
    processor = EmailDeliveryStore(engine)
    ids = [await _queued(writer) for _ in range(30)]

    async def race(email_id: uuid.UUID) -> tuple[bool, ClaimState]:
        cancel, claim = await asyncio.gather(
            writer.cancel(TENANT, email_id), processor.claim(email_id, 30, 1)
        )
        assert cancel is not None
        return cancel.canceled, claim.state

    outcomes = await asyncio.gather(*(race(email_id) for email_id in ids))

    for email_id, (canceled, claim) in zip(ids, outcomes, strict=True):
        statuses = [status for status, _ in await _history(engine, email_id)]
        if canceled:
            assert claim is ClaimState.CANCELED
            assert (await _status(engine, email_id), statuses) == (
                "CANCELED",
                ["QUEUED", "CANCELED"],
            )
        else:
            assert claim is ClaimState.CLAIMED
            assert (await _status(engine, email_id), statuses) == (
                "PROCESSING",
                ["QUEUED", "PROCESSING"],
            )


@pytest.mark.parametrize("first", ["cancel", "claim"])
async def test_whichever_of_cancel_and_claim_locks_the_email_first_wins(
    engine: AsyncEngine, writer: EmailWriter, first: str
) -> None:
    processor = EmailDeliveryStore(engine)
    email_id = await _queued(writer)

    if first == "cancel":
        cancel = await writer.cancel(TENANT, email_id)
        claim = await processor.claim(email_id, 30, 1)
    else:
        claim = await processor.claim(email_id, 30, 1)
        cancel = await writer.cancel(TENANT, email_id)

    assert cancel is not None
    if first == "cancel":
        assert (cancel.canceled, claim.state) == (True, ClaimState.CANCELED)
    else:
        assert (cancel.canceled, claim.state) == (False, ClaimState.CLAIMED)
