"""Claims against the real Postgres: atomic, idempotent for final emails, reclaimable on crash."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mailstack_core.database import normalize_database_url
from mailstack_core.tables import email_history, emails, tenants
from mailstack_processor.delivery import ClaimState, DeadLetterOutcome
from mailstack_processor.providers.base import SendReceipt
from mailstack_processor.repository import EmailDeliveryStore, delivery_pool
from mailstack_testing.waiting import eventually_async

pytestmark = pytest.mark.integration

TENANT = "tests"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(normalize_database_url(database_url), pool_size=10)
    yield engine
    await engine.dispose()


async def _queued_email(engine: AsyncEngine, status: str = "QUEUED") -> uuid.UUID:
    email_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(pg_insert(tenants).values(id=TENANT).on_conflict_do_nothing())
        await connection.execute(
            insert(emails).values(
                id=email_id,
                tenant_id=TENANT,
                sender_email="app@example.com",
                sender_name="App",
                to_recipients=[{"email": "user@example.com", "name": "User"}],
                cc_recipients=[{"email": "cc@example.com"}],
                subject="Hello",
                text_body="Hi",
                html_body="<p>Hi</p>",
                status=status,
                request_body="{}",
            )
        )
    return email_id


async def _history(engine: AsyncEngine, email_id: uuid.UUID) -> list[tuple[str, str | None]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(email_history.c.status, email_history.c.provider)
            .where(email_history.c.email_id == email_id)
            .order_by(email_history.c.id)
        )
        return [(row.status, row.provider) for row in rows]


async def test_only_one_of_many_concurrent_claims_wins(engine: AsyncEngine) -> None:
    store = EmailDeliveryStore(engine)
    email_id = await _queued_email(engine)
    claims = await asyncio.gather(*(store.claim(email_id, 30, 1) for _ in range(8)))
    states = sorted(claim.state.value for claim in claims)
    assert states.count("claimed") == 1
    assert states.count("busy") == 7
    assert await _history(engine, email_id) == [("PROCESSING", None)]


async def test_claim_loads_the_email_as_stored_with_its_tenant(engine: AsyncEngine) -> None:
    store = EmailDeliveryStore(engine)
    email_id = await _queued_email(engine)
    claim = await store.claim(email_id, 30, 1)
    assert claim.state is ClaimState.CLAIMED
    assert claim.tenant_id == TENANT
    assert claim.email is not None
    assert claim.email.sender.formatted() == "App <app@example.com>"
    assert [m.email for m in claim.email.cc] == ["cc@example.com"]
    assert (claim.email.text, claim.email.html) == ("Hi", "<p>Hi</p>")
    assert claim.attempt == 1


async def test_a_sent_email_is_final_and_never_claimed_again(engine: AsyncEngine) -> None:
    store = EmailDeliveryStore(engine)
    email_id = await _queued_email(engine)
    await store.claim(email_id, 30, 1)
    await store.mark_sent(email_id, SendReceipt("sendgrid", "msg-1", http_status=202))
    assert (await store.claim(email_id, 30, 2)).state is ClaimState.FINAL
    async with engine.connect() as connection:
        row = (await connection.execute(select(emails).where(emails.c.id == email_id))).one()
    assert (row.status, row.provider, row.provider_message_id) == ("SENT", "sendgrid", "msg-1")
    assert await _history(engine, email_id) == [("PROCESSING", None), ("SENT", "sendgrid")]


async def test_a_lapsed_claim_is_reclaimed_and_marked_as_unknown_outcome(
    engine: AsyncEngine,
) -> None:
    store = EmailDeliveryStore(engine)
    email_id = await _queued_email(engine)
    await store.claim(email_id, 30, 1)
    async with engine.begin() as connection:  # the holder crashed long ago
        await connection.execute(
            update(emails)
            .where(emails.c.id == email_id)
            .values(lease_expires_at=func.now() - text("interval '1 minute'"))
        )
    claim = await store.claim(email_id, 30, 2)
    assert claim.state is ClaimState.CLAIMED
    assert claim.attempt == 2
    async with engine.connect() as connection:
        detail = await connection.scalar(
            select(email_history.c.detail)
            .where(email_history.c.email_id == email_id)
            .order_by(email_history.c.id.desc())
            .limit(1)
        )
    assert detail["reclaimed"] is True
    assert detail["previous_attempt_outcome"] == "unknown"


async def test_claims_made_together_share_a_statement_and_each_gets_its_own_answer(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmailDeliveryStore(engine)
    queued = [await _queued_email(engine) for _ in range(8)]
    sent = await _queued_email(engine, status="SENT")
    unknown = uuid.uuid4()
    statements: list[list[uuid.UUID]] = []
    fetch = store._fetch

    async def counted(statement: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
        statements.append(list(parameters.get("email_ids", [])))
        return await fetch(statement, parameters)

    monkeypatch.setattr(store, "_fetch", counted)
    ids = [*queued, sent, unknown]
    claims = await asyncio.gather(
        *(store.claim(email_id, 30, receive_count) for receive_count, email_id in enumerate(ids))
    )

    # Asked for in the same turn of the event loop (as a received batch's deliveries start):
    # one statement for all ten.
    assert statements == [ids]
    assert [claim.state for claim in claims] == [ClaimState.CLAIMED] * 8 + [
        ClaimState.FINAL,
        ClaimState.MISSING,
    ]
    for receive_count, (email_id, claim) in enumerate(zip(queued, claims, strict=False)):
        assert claim.email is not None
        assert claim.email.id == email_id
        assert claim.attempt == 1
        async with engine.connect() as connection:
            detail = await connection.scalar(
                select(email_history.c.detail).where(email_history.c.email_id == email_id)
            )
        assert detail == {"attempt": 1, "receive_count": receive_count}
    assert await _history(engine, sent) == []


async def test_two_processors_claiming_the_same_emails_claim_each_once_without_deadlock(
    engine: AsyncEngine,
) -> None:
    first, second = EmailDeliveryStore(engine), EmailDeliveryStore(engine)
    ids = [await _queued_email(engine) for _ in range(10)]
    claims = await asyncio.gather(
        *(first.claim(email_id, 30, 1) for email_id in ids),
        *(second.claim(email_id, 30, 1) for email_id in reversed(ids)),
    )
    claimed = [
        claim.email.id for claim in claims if claim.state is ClaimState.CLAIMED and claim.email
    ]
    assert sorted(claimed) == sorted(ids)
    assert [claim.state for claim in claims].count(ClaimState.BUSY) == len(ids)
    for email_id in ids:
        assert await _history(engine, email_id) == [("PROCESSING", None)]


async def test_emails_sent_together_are_recorded_by_one_statement_each_with_its_receipt(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmailDeliveryStore(engine)
    ids = [await _queued_email(engine) for _ in range(4)]
    for email_id in ids:
        await store.claim(email_id, 30, 1)
    statements: list[str] = []
    fetch = store._fetch

    async def counted(statement: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
        statements.append(statement)
        return await fetch(statement, parameters)

    monkeypatch.setattr(store, "_fetch", counted)
    providers = ["sendgrid", "elasticemail", "sendgrid", "elasticemail"]
    await asyncio.gather(
        *(
            store.mark_sent(email_id, SendReceipt(provider, f"msg-{n}", f"tx-{n}", 202))
            for n, (email_id, provider) in enumerate(zip(ids, providers, strict=True))
        )
    )

    assert len(statements) == 1
    async with engine.connect() as connection:
        rows = {
            row.id: row
            for row in await connection.execute(select(emails).where(emails.c.id.in_(ids)))
        }
        for n, (email_id, provider) in enumerate(zip(ids, providers, strict=True)):
            row = rows[email_id]
            assert (row.status, row.provider, row.provider_message_id) == (
                "SENT",
                provider,
                f"msg-{n}",
            )
            assert (row.provider_transaction_id, row.lease_expires_at) == (f"tx-{n}", None)
            detail = await connection.scalar(
                select(email_history.c.detail).where(
                    email_history.c.email_id == email_id, email_history.c.status == "SENT"
                )
            )
            assert (detail["message_id"], detail["transaction_id"]) == (f"msg-{n}", f"tx-{n}")
    for email_id, provider in zip(ids, providers, strict=True):
        assert await _history(engine, email_id) == [("PROCESSING", None), ("SENT", provider)]


async def test_an_unknown_email_is_missing(engine: AsyncEngine) -> None:
    store = EmailDeliveryStore(engine)
    assert (await store.claim(uuid.uuid4(), 30, 1)).state is ClaimState.MISSING


async def test_release_and_fail_record_state_and_last_error(engine: AsyncEngine) -> None:
    store = EmailDeliveryStore(engine)
    email_id = await _queued_email(engine)
    await store.claim(email_id, 30, 1)
    await store.record_failed_attempt(email_id, "elasticemail", {"error": "HTTP 503"})
    await store.release_for_retry(email_id, {"last_error": "sendgrid HTTP 500: boom"})
    assert (await store.claim(email_id, 30, 2)).state is ClaimState.CLAIMED
    await store.mark_failed(email_id, "sendgrid", {"last_error": "sendgrid HTTP 500: boom"})
    async with engine.connect() as connection:
        row = (await connection.execute(select(emails).where(emails.c.id == email_id))).one()
    assert (row.status, row.last_error, row.attempts) == ("FAILED", "sendgrid HTTP 500: boom", 2)
    assert await _history(engine, email_id) == [
        ("PROCESSING", None),
        ("FAILED", "elasticemail"),
        ("QUEUED", None),
        ("PROCESSING", None),
        ("FAILED", "sendgrid"),
    ]


async def test_a_dead_lettered_open_email_becomes_failed_with_its_last_reason(
    engine: AsyncEngine,
) -> None:
    store = EmailDeliveryStore(engine)
    email_id = await _queued_email(engine)
    await store.claim(email_id, 30, 1)
    await store.release_for_retry(email_id, {"last_error": "sendgrid HTTP 503: busy"})

    assert await store.fail_dead_lettered(email_id) is DeadLetterOutcome.FAILED
    assert await store.fail_dead_lettered(email_id) is DeadLetterOutcome.FINAL
    async with engine.connect() as connection:
        row = (await connection.execute(select(emails).where(emails.c.id == email_id))).one()
        detail = await connection.scalar(
            select(email_history.c.detail)
            .where(email_history.c.email_id == email_id)
            .order_by(email_history.c.id.desc())
            .limit(1)
        )
    assert (row.status, row.last_error) == ("FAILED", "sendgrid HTTP 503: busy")
    assert detail == {"outcome": "dead_lettered", "last_error": "sendgrid HTTP 503: busy"}


async def test_a_dead_letter_does_not_fail_an_email_being_delivered(engine: AsyncEngine) -> None:
    store = EmailDeliveryStore(engine)
    email_id = await _queued_email(engine)
    await store.claim(email_id, 30, 1)
    assert await store.fail_dead_lettered(email_id) is DeadLetterOutcome.BUSY
    assert await store.fail_dead_lettered(uuid.uuid4()) is DeadLetterOutcome.MISSING


@pytest.mark.parametrize(
    ("status", "state", "dead_letter"),
    [
        ("CANCELED", ClaimState.CANCELED, DeadLetterOutcome.FINAL),
        ("SCHEDULED", ClaimState.NOT_DUE, DeadLetterOutcome.NOT_DUE),
    ],
)
async def test_a_canceled_or_scheduled_email_is_neither_claimed_nor_failed_by_a_dead_letter(
    engine: AsyncEngine, status: str, state: ClaimState, dead_letter: DeadLetterOutcome
) -> None:
    store = EmailDeliveryStore(engine)
    email_id = await _queued_email(engine, status)

    assert (await store.claim(email_id, 30, 1)).state is state
    assert await store.fail_dead_lettered(email_id) is dead_letter
    async with engine.connect() as connection:
        row = (await connection.execute(select(emails).where(emails.c.id == email_id))).one()
    assert (row.status, row.attempts, row.lease_expires_at) == (status, 0, None)
    assert await _history(engine, email_id) == []


async def test_the_delivery_pool_replaces_a_connection_the_server_closed(
    engine: AsyncEngine, database_url: str
) -> None:
    """A database restart or a terminated backend costs no delivery: the pool's check sees
    the closed connection before handing it out."""
    email_id = await _queued_email(engine)
    async with delivery_pool(database_url, 1) as pool:
        await pool.wait()
        async with pool.connection() as connection:
            backend = connection.info.backend_pid
        async with engine.connect() as admin:
            await admin.execute(select(func.pg_terminate_backend(backend)))

            async def gone() -> bool:
                running = (
                    select(func.count())
                    .where(text("pid = :pid"))
                    .select_from(text("pg_stat_activity"))
                )
                return await admin.scalar(running, {"pid": backend}) == 0

            await eventually_async(gone, 10, what="the terminated backend to exit")

        claim = await EmailDeliveryStore(engine, pool).claim(email_id, 30, 1)

    assert claim.state is ClaimState.CLAIMED
