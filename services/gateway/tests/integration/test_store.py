"""The gateway's SQL against the real Postgres: one-transaction intake, the outbox, paging."""

import asyncio
import json
import uuid

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from mailstack_core.tables import email_history, email_outbox, emails, idempotency_keys, tenants
from mailstack_gateway.intake import (
    Earlier,
    EarlierRequest,
    IdempotencyKey,
    parse_email,
    request_hash,
)
from mailstack_gateway.repository import EmailReader, EmailWriter

pytestmark = pytest.mark.integration

REQUEST = {
    "from": {"email": "app@example.com", "name": "App"},
    "to": [{"email": "user@example.com"}],
    "bcc": [{"email": "audit@example.com"}],
    "subject": "Hello",
    "text": "Hi",
}


TENANT = "acme"


async def _count(engine: AsyncEngine, table: object, email_id: uuid.UUID) -> int:
    column = table.c.email_id if table is not emails else table.c.id  # type: ignore[attr-defined]
    async with engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).where(column == email_id)) or 0)


async def test_stores_the_email_its_verbatim_request_a_queued_row_and_an_outbox_row(
    engine: AsyncEngine,
) -> None:
    writer = EmailWriter(engine, outbox_grace_seconds=0, outbox_max_backoff_seconds=60)
    raw = json.dumps(REQUEST, indent=3)  # odd spacing: it must be kept as sent
    email_id = uuid.uuid4()
    await writer.save_queued(TENANT, email_id, parse_email(REQUEST), raw)

    async with engine.connect() as connection:
        stored = await connection.scalar(
            select(emails.c.request_body).where(emails.c.id == email_id)
        )
    assert stored == raw
    row = await EmailReader(engine).get(TENANT, email_id)
    assert row is not None
    assert row.status == "QUEUED"
    assert row.bcc_recipients == [{"email": "audit@example.com"}]
    history = await EmailReader(engine).history(TENANT, email_id)
    assert history is not None
    assert [entry.status for entry in history] == ["QUEUED"]
    assert await _count(engine, email_outbox, email_id) == 1


async def test_a_failed_intake_leaves_nothing_behind(engine: AsyncEngine) -> None:
    writer = EmailWriter(engine, outbox_grace_seconds=0, outbox_max_backoff_seconds=60)
    email_id = uuid.uuid4()
    await writer.save_queued(TENANT, email_id, parse_email(REQUEST), "{}")
    with pytest.raises(IntegrityError):
        await writer.save_queued(TENANT, email_id, parse_email(REQUEST), "{}")
    assert await _count(engine, email_history, email_id) == 1
    assert await _count(engine, email_outbox, email_id) == 1


async def test_relays_never_claim_the_same_outbox_rows(engine: AsyncEngine) -> None:
    writer = EmailWriter(engine, outbox_grace_seconds=0, outbox_max_backoff_seconds=60)
    ids = [uuid.uuid4() for _ in range(6)]
    for email_id in ids:
        await writer.save_queued(TENANT, email_id, parse_email(REQUEST), "{}")
    first_claimed = asyncio.Event()
    release = asyncio.Event()
    seen: list[list[uuid.UUID]] = []

    async def hold() -> None:
        async with writer.claim_due(4) as batch:
            seen.append(list(batch.email_ids))
            first_claimed.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await first_claimed.wait()
    async with writer.claim_due(10) as other:
        seen.append(list(other.email_ids))
    release.set()
    await holder
    assert len(seen[0]) == 4
    assert len(seen[1]) == 2
    assert not set(seen[0]) & set(seen[1])


async def test_outbox_rows_wait_out_the_grace_period(engine: AsyncEngine) -> None:
    writer = EmailWriter(engine, outbox_grace_seconds=300, outbox_max_backoff_seconds=60)
    await writer.save_queued(TENANT, uuid.uuid4(), parse_email(REQUEST), "{}")
    async with writer.claim_due(10) as batch:
        assert list(batch.email_ids) == []


async def test_rescheduling_backs_off_and_records_the_error(engine: AsyncEngine) -> None:
    writer = EmailWriter(engine, outbox_grace_seconds=0, outbox_max_backoff_seconds=60)
    email_id = uuid.uuid4()
    await writer.save_queued(TENANT, email_id, parse_email(REQUEST), "{}")
    async with writer.claim_due(10) as batch:
        assert list(batch.email_ids) == [email_id]
        await batch.reschedule([email_id], "queue down")
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                select(
                    email_outbox.c.attempts,
                    email_outbox.c.last_error,
                    (email_outbox.c.next_attempt_at > func.now()).label("later"),
                ).where(email_outbox.c.email_id == email_id)
            )
        ).one()
    assert (row.attempts, row.last_error, row.later) == (1, "queue down", True)
    async with writer.claim_due(10) as batch:
        assert list(batch.email_ids) == []


async def test_pages_newest_first_and_filters_by_status(engine: AsyncEngine) -> None:
    writer = EmailWriter(engine, outbox_grace_seconds=0, outbox_max_backoff_seconds=60)
    ids = []
    for _ in range(5):
        email_id = uuid.uuid4()
        await writer.save_queued(TENANT, email_id, parse_email(REQUEST), "{}")
        ids.append(email_id)
    reader = EmailReader(engine)
    collected: list[uuid.UUID] = []
    cursor = None
    while True:
        page = await reader.page(TENANT, None, 2, cursor)
        collected += [row.id for row in page.rows]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert collected == list(reversed(ids))
    assert (await reader.page(TENANT, "SENT", 10, None)).rows == []  # type: ignore[arg-type]


async def test_the_inline_publish_skips_a_row_the_relay_holds(engine: AsyncEngine) -> None:
    writer = EmailWriter(engine, outbox_grace_seconds=0, outbox_max_backoff_seconds=60)
    email_id = uuid.uuid4()
    await writer.save_queued(TENANT, email_id, parse_email(REQUEST), "{}")
    async with writer.claim_due(10) as relay_batch:
        assert list(relay_batch.email_ids) == [email_id]
        async with writer.claim_ids([email_id]) as inline_batch:
            assert list(inline_batch.email_ids) == []
    async with writer.claim_ids([email_id]) as inline_batch:
        assert list(inline_batch.email_ids) == [email_id]


async def test_a_tenant_reads_and_lists_only_its_own_emails(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(tenants).values(id="globex"))
    writer = EmailWriter(engine, outbox_grace_seconds=0, outbox_max_backoff_seconds=60)
    reader = EmailReader(engine)
    ours, theirs = uuid.uuid4(), uuid.uuid4()
    await writer.save_queued(TENANT, ours, parse_email(REQUEST), "{}")
    await writer.save_queued("globex", theirs, parse_email(REQUEST), "{}")

    assert await reader.get(TENANT, theirs) is None
    assert await reader.history(TENANT, theirs) is None
    assert (await reader.get("globex", theirs)) is not None
    assert [row.id for row in (await reader.page(TENANT, None, 10, None)).rows] == [ours]
    assert [row.id for row in (await reader.page("globex", None, 10, None)).rows] == [theirs]


async def test_an_email_cannot_belong_to_a_tenant_that_does_not_exist(engine: AsyncEngine) -> None:
    writer = EmailWriter(engine, outbox_grace_seconds=0, outbox_max_backoff_seconds=60)
    with pytest.raises(IntegrityError):
        await writer.save_queued("nobody", uuid.uuid4(), parse_email(REQUEST), "{}")


async def _keyed(writer: EmailWriter, email_id: uuid.UUID, key: IdempotencyKey) -> Earlier | None:
    """As the intake does it: claim the key for the email, then store it (completing the key)."""
    earlier = await writer.claim_key(TENANT, key, [email_id])
    if earlier is not None:
        return earlier
    return await writer.save_queued(TENANT, email_id, parse_email(REQUEST), "{}", key)


async def test_one_idempotency_key_stores_one_email_even_under_concurrent_retries(
    engine: AsyncEngine,
) -> None:
    writer = EmailWriter(engine, outbox_grace_seconds=0, outbox_max_backoff_seconds=60)
    key = IdempotencyKey("order-42", request_hash(REQUEST))
    attempts = [uuid.uuid4() for _ in range(5)]

    earlier = await asyncio.gather(*(_keyed(writer, email_id, key) for email_id in attempts))

    stored = [email_id for email_id, found in zip(attempts, earlier, strict=True) if found is None]
    assert len(stored) == 1
    # The others were told it was in flight, or (once it committed) its email.
    assert {found.email_id for found in earlier if isinstance(found, EarlierRequest)} <= set(stored)
    assert all(found is None or found.request_sha256 == key.request_sha256 for found in earlier)
    async with engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(emails)) == 1


async def test_an_expired_idempotency_key_is_taken_anew_and_forgotten_by_the_cleanup(
    engine: AsyncEngine,
) -> None:
    writer = EmailWriter(engine, outbox_grace_seconds=0, outbox_max_backoff_seconds=60)
    key = IdempotencyKey("order-42", request_hash(REQUEST))
    first = uuid.uuid4()
    assert await _keyed(writer, first, key) is None
    async with engine.begin() as connection:
        await connection.execute(
            idempotency_keys.update().values(expires_at=func.now() - text("interval '1 second'"))
        )

    second = uuid.uuid4()
    assert await _keyed(writer, second, key) is None
    async with engine.connect() as connection:
        owner = await connection.scalar(select(idempotency_keys.c.email_id))
    assert owner == second

    async with engine.begin() as connection:
        await connection.execute(
            idempotency_keys.update().values(expires_at=func.now() - text("interval '1 second'"))
        )
    assert await writer.forget_expired_keys() == 1
    assert await writer.forget_expired_keys() == 0
