"""A duplicate of a request still in flight is 409, on the real Postgres and LocalStack S3: the key
is claimed before anything else, and completed in the email's own transaction."""

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from mailstack_core.database import normalize_database_url
from mailstack_core.tables import emails, idempotency_keys
from mailstack_gateway.auth import ALL_SCOPES
from mailstack_gateway.intake import (
    AttachmentStore,
    EarlierRequest,
    IdempotencyKey,
    RequestInFlight,
    parse_email,
    request_hash,
)
from mailstack_gateway.keys import KeyAdmin
from mailstack_gateway.main import create_app
from mailstack_gateway.repository import EmailWriter
from mailstack_gateway.schemas import AttachmentCreate
from mailstack_gateway.settings import GatewaySettings
from mailstack_testing.waiting import eventually_async

pytestmark = pytest.mark.integration

TENANT = "acme"
EMAIL: dict[str, Any] = {
    "from": {"email": "app@example.com"},
    "to": [{"email": "user@example.com"}],
    "subject": "Your invoice",
    "text": "Attached.",
    "attachments": [
        {
            "filename": "invoice.pdf",
            "content": base64.b64encode(b"%PDF-1.4\n" + bytes(range(256)) * 64).decode(),
            "content_type": "application/pdf",
        }
    ],
}
KEY = IdempotencyKey("order-42", request_hash(EMAIL))


async def _store(writer: EmailWriter, email_id: uuid.UUID) -> object:
    return await writer.save_queued(TENANT, email_id, parse_email(EMAIL), "{}", KEY)


async def _expire_keys(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            idempotency_keys.update().values(expires_at=func.now() - text("interval '1 second'"))
        )


async def _email_count(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(emails)) or 0)


# -- the store: claim, complete, replay ------------------------------------------------------


async def test_a_claimed_key_is_in_flight_until_its_email_commits_then_replays_it(
    engine: AsyncEngine, writer: EmailWriter
) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    assert await writer.claim_key(TENANT, KEY, [first]) is None

    assert await writer.claim_key(TENANT, KEY, [second]) == RequestInFlight(KEY.request_sha256)
    other_body = IdempotencyKey(KEY.key, request_hash({"other": "body"}))
    assert await writer.claim_key(TENANT, other_body, [second]) == RequestInFlight(
        KEY.request_sha256
    )
    assert await _store(writer, first) is None

    assert await writer.claim_key(TENANT, KEY, [second]) == EarlierRequest(
        first, KEY.request_sha256, (first,)
    )
    assert await _email_count(engine) == 1


async def test_a_duplicate_arriving_while_the_key_is_being_completed_waits_and_replays(
    engine: AsyncEngine, writer: EmailWriter
) -> None:
    """The completion locks the key's row until its transaction commits (milliseconds): a claim
    meanwhile waits for it and answers the replay, not a 409."""
    first = uuid.uuid4()
    assert await writer.claim_key(TENANT, KEY, [first]) is None
    await writer.save_queued(TENANT, first, parse_email(EMAIL), "{}")  # the email, key unfinished
    async with engine.connect() as completing:
        transaction = await completing.begin()
        # What the accept statement does to the key, not committed yet.
        await completing.execute(
            idempotency_keys.update()
            .where(idempotency_keys.c.key == KEY.key)
            .values(email_id=first, expires_at=func.now() + text("interval '1 day'"))
        )
        duplicate = asyncio.create_task(writer.claim_key(TENANT, KEY, [uuid.uuid4()]))
        blocked = await eventually_async(
            lambda: _backends_waiting_on_a_lock(engine),
            10,
            what="the duplicate's claim waits on the key's row",
        )
        assert blocked == 1
        assert not duplicate.done()
        await transaction.commit()

    assert await duplicate == EarlierRequest(first, KEY.request_sha256, (first,))


async def _backends_waiting_on_a_lock(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        waiting = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO idempotency_keys%'"
            )
        )
    return int(waiting or 0)


async def test_a_lapsed_claim_is_taken_anew_and_its_slow_request_then_stores_nothing(
    engine: AsyncEngine, writer: EmailWriter
) -> None:
    slow, retry = uuid.uuid4(), uuid.uuid4()
    assert await writer.claim_key(TENANT, KEY, [slow]) is None
    await _expire_keys(engine)  # a crashed (or far too slow) request's claim lapses

    assert await writer.claim_key(TENANT, KEY, [retry]) is None
    assert await _store(writer, slow) == RequestInFlight(KEY.request_sha256)
    assert await _store(writer, retry) is None
    assert await _store(writer, slow) == EarlierRequest(retry, KEY.request_sha256, (retry,))
    assert await _email_count(engine) == 1


async def test_a_released_claim_frees_the_key_and_only_its_own_request_can_release_it(
    writer: EmailWriter,
) -> None:
    failed, other, retry = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert await writer.claim_key(TENANT, KEY, [failed]) is None

    await writer.release_key(TENANT, KEY, [other])
    assert await writer.claim_key(TENANT, KEY, [retry]) == RequestInFlight(KEY.request_sha256)
    await writer.release_key(TENANT, KEY, [failed])

    assert await writer.claim_key(TENANT, KEY, [retry]) is None
    assert await _store(writer, retry) is None
    await writer.release_key(TENANT, KEY, [retry])  # done: a completed key is never released
    assert await writer.claim_key(TENANT, KEY, [failed]) == EarlierRequest(
        retry, KEY.request_sha256, (retry,)
    )


async def test_the_cleanup_forgets_lapsed_claims_too(
    engine: AsyncEngine, writer: EmailWriter
) -> None:
    assert await writer.claim_key(TENANT, KEY, [uuid.uuid4()]) is None
    assert await writer.forget_expired_keys() == 0
    await _expire_keys(engine)
    assert await writer.forget_expired_keys() == 1


# -- the whole app: a first request paused while it uploads its attachments -------------------


class PausedUploads:
    """The gateway's real S3 store, its first upload held until the test lets it go: that
    request is in flight, deterministically, for as long as the test needs (any later upload
    goes through at once)."""

    def __init__(self, store: AttachmentStore) -> None:
        self._store = store
        self.started = asyncio.Event()
        self.proceed = asyncio.Event()

    async def put(self, email_id: uuid.UUID, attachments: Sequence[AttachmentCreate]) -> list[str]:
        if not self.started.is_set():
            self.started.set()
            await self.proceed.wait()
        return await self._store.put(email_id, attachments)


def _admin_key(database_url: str) -> str:
    engine = create_engine(normalize_database_url(database_url))
    try:
        admin = KeyAdmin(engine)
        admin.ensure_tenant(TENANT)
        return admin.create_key(TENANT, "idempotency", ALL_SCOPES)[1].token
    finally:
        engine.dispose()


@pytest.fixture
async def gateway(
    database_url: str, localstack_endpoint: str, sqs_queues: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, PausedUploads]]:
    settings = GatewaySettings(
        database_url=database_url,
        email_queue_url=sqs_queues.email_queue_url,
        attachments_bucket=sqs_queues.attachments_bucket,
        aws_endpoint_url=localstack_endpoint,
        outbox_grace_seconds=60,
    )
    app = create_app(settings, run_relay=False)
    uploads = PausedUploads(app.state.services.attachments)
    app.state.services.attachments = uploads
    headers = {"Authorization": f"Bearer {_admin_key(database_url)}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway", headers=headers
        ) as client,
    ):
        yield client, uploads


async def _first_paused_then(
    client: httpx.AsyncClient,
    uploads: PausedUploads,
    path: str,
    body: dict[str, Any],
    other: dict[str, Any],
) -> tuple[httpx.Response, httpx.Response, httpx.Response, httpx.Response]:
    """The first request (`body`), paused mid-upload; a duplicate and `other` with the same key
    meanwhile; then the first let go, and a retry: (duplicate, other, first, retry)."""
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    first = asyncio.create_task(client.post(path, json=body, headers=key))
    await asyncio.wait_for(uploads.started.wait(), timeout=30)

    duplicate = await client.post(path, json=body, headers=key)
    other_body = await client.post(path, json=other, headers=key)
    assert not first.done()
    uploads.proceed.set()
    done = await first
    retry = await client.post(path, json=body, headers=key)
    return duplicate, other_body, done, retry


def _assert_in_flight(response: httpx.Response) -> None:
    assert response.status_code == 409, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"] == "idempotency_key_in_flight"
    assert "idempotent-replayed" not in response.headers


async def test_a_duplicate_of_an_email_in_flight_is_409_and_its_retry_afterwards_the_replay(
    gateway: tuple[httpx.AsyncClient, PausedUploads],
) -> None:
    client, uploads = gateway

    duplicate, other_body, first, retry = await _first_paused_then(
        client, uploads, "/v1/emails", EMAIL, EMAIL | {"subject": "Another"}
    )

    _assert_in_flight(duplicate)
    assert other_body.status_code == 422
    assert other_body.json()["errors"][0]["field"] == "Idempotency-Key"
    assert first.status_code == retry.status_code == 202, (first.text, retry.text)
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    listed = (await client.get("/v1/emails")).json()["items"]
    assert [item["id"] for item in listed] == [first.json()["id"]]


async def test_a_duplicate_of_a_batch_in_flight_is_409_and_its_retry_afterwards_the_replay(
    gateway: tuple[httpx.AsyncClient, PausedUploads],
) -> None:
    client, uploads = gateway
    plain = {key: value for key, value in EMAIL.items() if key != "attachments"}
    batch = {"emails": [plain, EMAIL | {"to": [{"email": "ada@example.com"}]}]}

    duplicate, other_body, first, retry = await _first_paused_then(
        client, uploads, "/v1/emails/batch", batch, {"emails": [plain]}
    )

    _assert_in_flight(duplicate)
    assert other_body.status_code == 422
    assert other_body.json()["errors"][0]["field"] == "Idempotency-Key"
    assert first.status_code == retry.status_code == 202, (first.text, retry.text)
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    listed = (await client.get("/v1/emails")).json()["items"]
    assert sorted(item["id"] for item in listed) == sorted(
        item["id"] for item in first.json()["items"]
    )


async def test_a_request_that_failed_releases_its_key_so_the_retry_is_handled_not_409(
    database_url: str, localstack_endpoint: str, sqs_queues: Any
) -> None:
    settings = GatewaySettings(
        database_url=database_url,
        email_queue_url=sqs_queues.email_queue_url,
        attachments_bucket=f"no-such-bucket-{uuid.uuid4().hex[:8]}",
        aws_endpoint_url=localstack_endpoint,
        outbox_grace_seconds=60,
    )
    app = create_app(settings, run_relay=False)
    headers = {
        "Authorization": f"Bearer {_admin_key(database_url)}",
        "Idempotency-Key": "order-42",
    }
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway", headers=headers
        ) as client,
    ):
        failed = await client.post("/v1/emails", json=EMAIL)
        retried = await client.post("/v1/emails", json=EMAIL)

    assert failed.status_code == retried.status_code == 503
    assert retried.json()["error"] == "attachment_storage_unavailable"
