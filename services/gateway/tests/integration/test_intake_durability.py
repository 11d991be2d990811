"""A 202 means durable: the app on the real Postgres and LocalStack, with each of them down."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.ext.asyncio import create_async_engine

from mailstack_core.database import normalize_database_url
from mailstack_core.messages import EmailQueuedMessage
from mailstack_core.tables import email_outbox, emails
from mailstack_gateway import outbox
from mailstack_gateway.auth import ALL_SCOPES
from mailstack_gateway.keys import KeyAdmin
from mailstack_gateway.main import create_app
from mailstack_gateway.queue import SqsEmailPublisher, sqs_client
from mailstack_gateway.repository import EmailWriter
from mailstack_gateway.settings import GatewaySettings
from mailstack_testing.aws import localstack_clients

pytestmark = pytest.mark.integration

EMAIL = {
    "from": {"email": "app@example.com"},
    "to": [{"email": "user@example.com"}],
    "subject": "Hello",
    "text": "Hi",
}
UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing listens there


def _settings(
    database_url: str, queue_url: str, endpoint: str, attachments_bucket: str = "unused"
) -> GatewaySettings:
    return GatewaySettings(
        database_url=database_url,
        email_queue_url=queue_url,
        attachments_bucket=attachments_bucket,
        aws_endpoint_url=endpoint,
        outbox_grace_seconds=0,
        database_timeout_seconds=1,
    )


# A well-formed key: with the database down, looking it up is the first thing that fails.
UNCHECKABLE_KEY = f"ms_{'0' * 16}_{'A' * 43}"


def _admin_key(database_url: str) -> str:
    engine = create_engine(normalize_database_url(database_url))
    try:
        admin = KeyAdmin(engine)
        admin.ensure_tenant("acme")
        return admin.create_key("acme", "durability", ALL_SCOPES)[1].token
    finally:
        engine.dispose()


async def _client(settings: GatewaySettings, key: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, run_relay=False)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {key}"}
    # The lifespan runs the inline publisher (the relay stays off: the tests drive it).
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://gateway", headers=headers
        ) as client,
    ):
        yield client


async def _outbox_rows(database_url: str) -> int:
    engine = create_async_engine(normalize_database_url(database_url))
    try:
        async with engine.connect() as connection:
            return int(await connection.scalar(select(func.count()).select_from(email_outbox)) or 0)
    finally:
        await engine.dispose()


def _queued_ids(endpoint: str, queue_url: str) -> list[uuid.UUID]:
    client, _ = localstack_clients(endpoint)
    response = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2)
    return [
        EmailQueuedMessage.from_json(message["Body"]).email_id
        for message in response.get("Messages", [])
    ]


async def test_accepted_email_is_published_and_leaves_the_outbox(
    database_url: str, localstack_endpoint: str, sqs_queues: Any
) -> None:
    settings = _settings(database_url, sqs_queues.email_queue_url, localstack_endpoint)
    async for client in _client(settings, _admin_key(database_url)):
        response = await client.post("/v1/emails", json=EMAIL)
        assert response.status_code == 202
        email_id = uuid.UUID(response.json()["id"])
        assert (await client.get("/readyz")).status_code == 200
    assert _queued_ids(localstack_endpoint, sqs_queues.email_queue_url) == [email_id]
    assert await _outbox_rows(database_url) == 0


async def test_answers_503_and_stores_nothing_when_the_database_is_down(
    localstack_endpoint: str, sqs_queues: Any
) -> None:
    settings = _settings(
        "postgresql://postgres@127.0.0.1:9/nowhere", sqs_queues.email_queue_url, localstack_endpoint
    )
    async for client in _client(settings, UNCHECKABLE_KEY):
        response = await client.post("/v1/emails", json=EMAIL)
        assert response.status_code == 503
        assert response.json()["error"] == "database_unavailable"
        assert response.headers["retry-after"]
        # /readyz needs an admin key, which cannot be checked either: not ready, all the same.
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"] == "database_unavailable"
    assert _queued_ids(localstack_endpoint, sqs_queues.email_queue_url) == []


async def test_still_accepts_when_the_queue_is_down_and_the_relay_publishes_later(
    database_url: str, localstack_endpoint: str, sqs_queues: Any
) -> None:
    down = _settings(database_url, sqs_queues.email_queue_url, UNREACHABLE)
    async for client in _client(down, _admin_key(database_url)):
        response = await client.post("/v1/emails", json=EMAIL)
        assert response.status_code == 202
        email_id = uuid.UUID(response.json()["id"])
        assert (await client.get("/readyz")).status_code == 503
    assert await _outbox_rows(database_url) == 1

    # The queue is back: one relay round publishes the email and clears the outbox.
    engine = create_async_engine(normalize_database_url(database_url))
    try:
        writer = EmailWriter(engine, outbox_grace_seconds=0, outbox_max_backoff_seconds=60)
        publisher = SqsEmailPublisher(
            sqs_client(localstack_endpoint, "us-east-1"), sqs_queues.email_queue_url
        )
        # The failed inline publish backed the row off; time passes until it is due again.
        async with engine.begin() as connection:
            await connection.execute(email_outbox.update().values(next_attempt_at=func.now()))
        assert await outbox.relay_once(writer, publisher) == 1
        async with engine.connect() as connection:
            assert await connection.scalar(select(emails.c.status)) == "QUEUED"
    finally:
        await engine.dispose()
    assert _queued_ids(localstack_endpoint, sqs_queues.email_queue_url) == [email_id]
    assert await _outbox_rows(database_url) == 0
