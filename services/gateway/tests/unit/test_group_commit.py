"""Group commit: which saves are written together, when each request is answered, and how a
failing group is answered. The store is a fake whose statements the test lets finish."""

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from sqlalchemy.exc import DataError, OperationalError

from mailstack_gateway.group_commit import GroupCommit
from mailstack_gateway.intake import Earlier, IdempotencyKey, NewEmail, parse_email

EMAIL = parse_email(
    {
        "from": {"email": "app@example.com"},
        "to": [{"email": "u@example.com"}],
        "subject": "Hello",
        "text": "hi",
    }
)
KEY = IdempotencyKey("k-1", b"\x00" * 32)


def new_emails(count: int = 1, body: str = "{}") -> list[NewEmail]:
    return [NewEmail(uuid.uuid4(), EMAIL, body) for _ in range(count)]


class HeldStore:
    """Records each statement (tenant, email ids, key) and holds it until released; a statement
    holding an email id in `refuse` fails as a bad row would, every one with `error` if set."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, list[uuid.UUID], IdempotencyKey | None]] = []
        self.release = asyncio.Event()
        self.refuse: set[uuid.UUID] = set()
        self.error: Exception | None = None

    async def claim_key(
        self, tenant_id: str, idempotency: IdempotencyKey, email_ids: Sequence[uuid.UUID]
    ) -> Earlier | None:
        return None

    async def release_key(
        self, tenant_id: str, idempotency: IdempotencyKey, email_ids: Sequence[uuid.UUID]
    ) -> None:
        return None

    async def save_batch(
        self,
        tenant_id: str,
        new_emails: Sequence[NewEmail],
        idempotency: IdempotencyKey | None = None,
    ) -> Earlier | None:
        ids = [new.id for new in new_emails]
        self.statements.append((tenant_id, ids, idempotency))
        await self.release.wait()
        if self.error is not None:
            raise self.error
        if self.refuse & set(ids):
            raise DataError("INSERT ...", {}, Exception("invalid byte sequence"))
        return None


async def started(count: int) -> None:
    """Let the event loop run the tasks just created up to their first wait."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_lone_request_is_written_at_once_and_answered_after_its_commit() -> None:
    store = HeldStore()
    group = GroupCommit(store)
    [email] = new_emails()
    request = asyncio.create_task(group.save_batch("acme", [email]))
    await started(3)
    assert store.statements == [("acme", [email.id], None)]
    assert not request.done()
    store.release.set()
    assert await request is None


async def test_requests_arriving_during_writes_are_written_together_in_one_statement() -> None:
    store = HeldStore()
    group = GroupCommit(store, writers=1)
    first = new_emails()
    waiting = [new_emails() for _ in range(5)] + [new_emails(3)]
    requests = [asyncio.create_task(group.save_batch("acme", first))]
    await started(3)
    requests += [asyncio.create_task(group.save_batch("acme", emails)) for emails in waiting]
    await started(3)
    assert len(store.statements) == 1
    assert not any(request.done() for request in requests)
    store.release.set()
    await asyncio.gather(*requests)
    grouped = [new.id for emails in waiting for new in emails]
    assert store.statements[1:] == [("acme", grouped, None)]


async def test_each_tenant_is_written_by_its_own_statements() -> None:
    store = HeldStore()
    store.release.set()
    group = GroupCommit(store, writers=1)
    emails = {tenant: new_emails() for tenant in ("acme", "globex", "initech")}
    await asyncio.gather(*(group.save_batch(t, e) for t, e in emails.items()))
    assert sorted((t, ids) for t, ids, _ in store.statements) == sorted(
        (t, [new.id for new in e]) for t, e in emails.items()
    )


async def test_a_group_keeps_within_its_email_and_size_limits() -> None:
    store = HeldStore()
    group = GroupCommit(store, writers=1, max_emails=4, max_bytes=1000)
    blocker = asyncio.create_task(group.save_batch("acme", new_emails()))
    await started(3)
    small = [new_emails(2) for _ in range(3)]
    large = new_emails(1, body="x" * 2000)
    requests = [asyncio.create_task(group.save_batch("acme", e)) for e in [*small, large]]
    await started(3)
    store.release.set()
    await asyncio.gather(blocker, *requests)
    sizes = [len(ids) for _, ids, _ in store.statements[1:]]
    # Two requests of two emails, then the third alone, then the large one alone.
    assert sizes == [4, 2, 1]


async def test_requests_with_an_idempotency_key_are_never_grouped() -> None:
    store = HeldStore()
    store.release.set()
    group = GroupCommit(store)
    emails = new_emails()
    assert await group.save_batch("acme", emails, KEY) is None
    assert store.statements == [("acme", [emails[0].id], KEY)]


async def test_a_bad_row_fails_only_its_own_request() -> None:
    store = HeldStore()
    group = GroupCommit(store, writers=1)
    blocker = asyncio.create_task(group.save_batch("acme", new_emails()))
    await started(3)
    good, bad = new_emails(), new_emails()
    store.refuse.add(bad[0].id)
    requests = [asyncio.create_task(group.save_batch("acme", e)) for e in (good, bad)]
    await started(3)
    store.release.set()
    results = await asyncio.gather(blocker, *requests, return_exceptions=True)
    assert results[:2] == [None, None]
    assert isinstance(results[2], DataError)
    # The group, then each of its requests alone.
    assert [ids for _, ids, _ in store.statements[1:]] == [
        [good[0].id, bad[0].id],
        [good[0].id],
        [bad[0].id],
    ]


async def test_a_database_error_is_every_grouped_request_answer_without_retries() -> None:
    store = HeldStore()
    group = GroupCommit(store, writers=1)
    blocker = asyncio.create_task(group.save_batch("acme", new_emails()))
    await started(3)
    requests = [asyncio.create_task(group.save_batch("acme", new_emails())) for _ in range(3)]
    await started(3)
    store.error = OperationalError("INSERT ...", {}, Exception("connection refused"))
    store.release.set()
    results = await asyncio.gather(blocker, *requests, return_exceptions=True)
    assert all(isinstance(result, OperationalError) for result in results)
    assert len(store.statements) == 2


async def test_a_cancelled_request_leaves_the_others_of_its_group_answered() -> None:
    store = HeldStore()
    group = GroupCommit(store, writers=1)
    blocker = asyncio.create_task(group.save_batch("acme", new_emails()))
    await started(3)
    leaving, staying = (asyncio.create_task(group.save_batch("acme", new_emails())) for _ in "ab")
    await started(3)
    leaving.cancel()
    store.release.set()
    assert await asyncio.gather(blocker, staying) == [None, None]
    with pytest.raises(asyncio.CancelledError):
        await leaving
