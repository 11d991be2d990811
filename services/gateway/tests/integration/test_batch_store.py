"""A batch on the real Postgres: one statement, all of its emails or none, replayable by key."""

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from mailstack_core.tables import email_history, email_outbox, emails, idempotency_keys
from mailstack_gateway.group_commit import GroupCommit
from mailstack_gateway.intake import (
    Earlier,
    EarlierRequest,
    IdempotencyKey,
    NewEmail,
    parse_email,
    request_hash,
)
from mailstack_gateway.repository import EmailWriter
from mailstack_gateway.schemas import EmailCreate

pytestmark = pytest.mark.integration

TENANT = "acme"


def _request(n: int, **overrides: Any) -> dict[str, Any]:
    return {
        "from": {"email": "app@example.com"},
        "to": [{"email": f"user{n}@example.com"}],
        "subject": f"Hello {n}",
        "text": "Hi",
    } | overrides


def _batch(count: int, **overrides: Any) -> list[NewEmail]:
    return [
        NewEmail(uuid.uuid4(), parse_email(_request(n, **overrides)), json.dumps(_request(n)))
        for n in range(count)
    ]


@pytest.fixture
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every SQL statement the engine sends, from here on."""
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    yield sent
    event.remove(engine.sync_engine, "before_cursor_execute", record)


async def _counts(engine: AsyncEngine) -> tuple[int, int, int]:
    async with engine.connect() as connection:
        return tuple(  # type: ignore[return-value]
            [
                int(await connection.scalar(select(func.count()).select_from(table)) or 0)
                for table in (emails, email_history, email_outbox)
            ]
        )


async def test_a_hundred_emails_are_stored_by_one_statement_with_their_rows(
    engine: AsyncEngine, writer: EmailWriter, statements: list[str]
) -> None:
    batch = _batch(100)

    assert await writer.save_batch(TENANT, batch) is None

    assert len(statements) == 1
    assert await _counts(engine) == (100, 100, 100)
    async with engine.connect() as connection:
        rows = {
            row.id: row
            for row in await connection.execute(
                select(emails.c.id, emails.c.status, emails.c.subject, emails.c.request_body)
            )
        }
    for new in batch:
        row = rows[new.id]
        assert (row.status, row.subject) == ("QUEUED", new.email.subject)
        assert row.request_body == new.request_body


async def test_scheduled_emails_of_a_batch_get_a_scheduled_row_and_no_outbox_row(
    engine: AsyncEngine, writer: EmailWriter
) -> None:
    send_at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    scheduled = _batch(2, send_at=send_at.isoformat())
    now = _batch(1)

    await writer.save_batch(TENANT, [*scheduled, *now])

    async with engine.connect() as connection:
        stored = {
            row.id: (row.status, row.send_at)
            for row in await connection.execute(
                select(emails.c.id, emails.c.status, emails.c.send_at)
            )
        }
        history = {
            row.email_id: (row.status, row.detail)
            for row in await connection.execute(select(email_history))
        }
        outbox = set(await connection.scalars(select(email_outbox.c.email_id)))
    for new in scheduled:
        assert stored[new.id] == ("SCHEDULED", send_at)
        status, detail = history[new.id]
        assert status == "SCHEDULED"
        assert detail["outcome"] == "accepted"
        assert datetime.fromisoformat(detail["send_at"]) == send_at
    assert stored[now[0].id] == ("QUEUED", None)
    assert history[now[0].id] == ("QUEUED", {"outcome": "accepted"})
    assert outbox == {now[0].id}


def _without_a_body(email: EmailCreate) -> EmailCreate:
    """An email the API would refuse (no text, no html): the database refuses it too."""
    return email.model_copy(update={"text": None, "html": None})


async def test_an_email_the_database_refuses_leaves_nothing_of_the_whole_batch(
    engine: AsyncEngine, writer: EmailWriter
) -> None:
    batch = _batch(50)
    batch[37] = NewEmail(batch[37].id, _without_a_body(batch[37].email), "{}")

    with pytest.raises(IntegrityError, match="emails_has_body"):
        await writer.save_batch(TENANT, batch)

    assert await _counts(engine) == (0, 0, 0)


async def test_a_batch_naming_one_id_twice_leaves_nothing(
    engine: AsyncEngine, writer: EmailWriter
) -> None:
    batch = _batch(10)
    batch[9] = NewEmail(batch[0].id, batch[9].email, batch[9].request_body)

    with pytest.raises(IntegrityError):
        await writer.save_batch(TENANT, batch)

    assert await _counts(engine) == (0, 0, 0)


async def _keyed(
    writer: EmailWriter, new_emails: list[NewEmail], key: IdempotencyKey
) -> Earlier | None:
    """As the intake does it: claim the key for these emails, then store them (completing it)."""
    earlier = await writer.claim_key(TENANT, key, [new.id for new in new_emails])
    return earlier if earlier is not None else await writer.save_batch(TENANT, new_emails, key)


async def test_one_key_stores_one_batch_under_concurrent_retries_and_replays_its_ids_in_order(
    engine: AsyncEngine, writer: EmailWriter
) -> None:
    key = IdempotencyKey("nightly-digest", request_hash({"emails": ["the same request"]}))
    attempts = [_batch(5) for _ in range(4)]

    results = await asyncio.gather(*(_keyed(writer, a, key) for a in attempts))

    stored = [attempt for attempt, result in zip(attempts, results, strict=True) if result is None]
    assert len(stored) == 1
    first_ids = tuple(new.id for new in stored[0])
    # Each other attempt was told the first was in flight, or (once it committed) its ids.
    for result in results:
        if result is not None:
            assert result.request_sha256 == key.request_sha256
            if isinstance(result, EarlierRequest):
                assert (result.email_id, result.email_ids) == (first_ids[0], first_ids)
    assert await _counts(engine) == (5, 5, 5)
    assert await _keyed(writer, _batch(5), key) == EarlierRequest(
        first_ids[0], key.request_sha256, first_ids
    )
    async with engine.connect() as connection:
        kept = (await connection.execute(select(idempotency_keys))).one()
    assert (kept.email_id, tuple(kept.email_ids)) == (first_ids[0], first_ids)


async def test_a_single_email_key_replays_as_a_one_email_batch(
    engine: AsyncEngine, writer: EmailWriter
) -> None:
    key = IdempotencyKey("receipt-1", request_hash(_request(1)))
    first = _batch(1)
    assert await _keyed(writer, first, key) is None

    earlier = await _keyed(writer, _batch(1), key)

    assert isinstance(earlier, EarlierRequest)
    assert (earlier.email_id, earlier.email_ids) == (first[0].id, (first[0].id,))
    assert await _counts(engine) == (1, 1, 1)


async def test_group_commit_writes_concurrent_requests_in_fewer_statements_all_durable(
    engine: AsyncEngine, writer: EmailWriter, statements: list[str]
) -> None:
    group = GroupCommit(writer, writers=2)
    requests = [_batch(1) for _ in range(40)]
    await asyncio.gather(*(group.save_batch(TENANT, emails) for emails in requests))
    saves = [sql for sql in statements if "INSERT INTO emails" in sql]
    assert 1 <= len(saves) < 40
    ids = {emails[0].id for emails in requests}
    async with engine.connect() as connection:
        stored = set((await connection.execute(select(emails.c.id))).scalars())
        history = (await connection.execute(select(email_history.c.email_id))).scalars().all()
        outbox = set((await connection.execute(select(email_outbox.c.email_id))).scalars())
    assert stored == ids
    assert sorted(history) == sorted(ids)
    assert outbox == ids


async def test_group_commit_fails_only_the_request_whose_row_postgres_refuses(
    engine: AsyncEngine, writer: EmailWriter
) -> None:
    group = GroupCommit(writer, writers=1)
    blocker, good = _batch(1), _batch(2)
    # A NUL character (the API refuses it; here it gets past): no Postgres text can hold it.
    nul = parse_email(_request(9)).model_copy(update={"subject": "a\x00b"})
    bad = [NewEmail(uuid.uuid4(), nul, "{}")]
    results = await asyncio.gather(
        *(group.save_batch(TENANT, e) for e in (blocker, good, bad)), return_exceptions=True
    )
    assert results[:2] == [None, None]
    assert isinstance(results[2], DataError)
    async with engine.connect() as connection:
        stored = set((await connection.execute(select(emails.c.id))).scalars())
    assert stored == {new.id for new in [*blocker, *good]}
