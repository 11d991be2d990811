"""The processor's side of the new fields on the real Postgres and the real LocalStack S3."""

import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mailstack_core.database import normalize_database_url
from mailstack_core.lazy import OnFirstUse
from mailstack_core.tables import email_history, emails, tenants
from mailstack_processor.attachments import S3AttachmentSource, s3_client
from mailstack_processor.delivery import (
    AttachmentMissingError,
    AttachmentRef,
    AttachmentStoreUnavailableError,
    ClaimState,
    RetryPolicy,
    deliver,
)
from mailstack_processor.providers.base import SendReceipt
from mailstack_processor.repository import EmailDeliveryStore
from mailstack_testing.aws import localstack_clients

pytestmark = pytest.mark.integration

TENANT = "tests"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 16
POLICY = RetryPolicy(
    max_attempts=5, backoff_base_seconds=1, backoff_max_seconds=10, poison_backoff_seconds=1
)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(normalize_database_url(database_url))
    async with engine.begin() as connection:
        await connection.execute(pg_insert(tenants).values(id=TENANT).on_conflict_do_nothing())
    yield engine
    await engine.dispose()


def _manifest(email_id: uuid.UUID) -> dict[str, Any]:
    return {
        "key": f"{email_id}/0",
        "filename": "invoice.pdf",
        "content_type": "application/pdf",
        "disposition": "attachment",
        "content_id": None,
        "size": len(PDF),
        "sha256": hashlib.sha256(PDF).hexdigest(),
    }


async def _queued_email(engine: AsyncEngine, to: str = "user@example.com", **fields: Any) -> Any:
    email_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            insert(emails).values(
                id=email_id,
                tenant_id=TENANT,
                sender_email="app@example.com",
                to_recipients=[{"email": to}],
                subject="Hello",
                text_body="Hi",
                status="QUEUED",
                request_body="{}",
                **fields,
            )
        )
    return email_id


async def test_a_claim_carries_headers_tags_metadata_and_the_attachment_manifest(
    engine: AsyncEngine,
) -> None:
    email_id = uuid.uuid4()
    await _queued_email(engine)  # another email, to be sure the right row is read
    async with engine.begin() as connection:
        await connection.execute(
            insert(emails).values(
                id=email_id,
                tenant_id=TENANT,
                sender_email="app@example.com",
                to_recipients=[{"email": "user@example.com"}],
                subject="Hello",
                text_body="Hi",
                status="QUEUED",
                request_body="{}",
                headers={"X-Entity-Ref-ID": "order-1234"},
                tags=["welcome", "beta"],
                metadata={"user_id": "42"},
                attachments=[_manifest(email_id)],
            )
        )

    claim = await EmailDeliveryStore(engine).claim(email_id, 30, 1)

    assert claim.state is ClaimState.CLAIMED
    assert claim.email is not None
    assert dict(claim.email.headers) == {"X-Entity-Ref-ID": "order-1234"}
    assert claim.email.tags == ("welcome", "beta")
    assert dict(claim.email.metadata) == {"user_id": "42"}
    assert claim.attachments == (AttachmentRef(**_manifest(email_id)),)


async def test_a_test_mode_email_is_sent_by_the_sink_and_its_history_says_so(
    engine: AsyncEngine,
) -> None:
    email_id = await _queued_email(engine, to="signup@sink.mailstack.test")
    store = EmailDeliveryStore(engine)

    disposition = await deliver(email_id, 1, store, [], POLICY, 30)

    assert disposition.status is not None
    assert disposition.status.value == "SENT"
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                select(emails.c.status, emails.c.provider).where(emails.c.id == email_id)
            )
        ).one()
        history = (
            await connection.execute(
                select(email_history.c.status, email_history.c.provider, email_history.c.detail)
                .where(email_history.c.email_id == email_id)
                .order_by(email_history.c.id)
            )
        ).all()
    assert (row.status, row.provider) == ("SENT", "sink")
    assert [(h.status, h.provider) for h in history] == [("PROCESSING", None), ("SENT", "sink")]
    sent = history[-1].detail
    assert sent["test_mode"] is True
    assert "no provider was called" in sent["note"]
    assert sent["message_id"] == f"sink-{email_id}"


async def test_mark_sent_of_a_real_provider_says_nothing_of_test_mode(engine: AsyncEngine) -> None:
    email_id = await _queued_email(engine)
    store = EmailDeliveryStore(engine)
    await store.claim(email_id, 30, 1)

    await store.mark_sent(email_id, SendReceipt("sendgrid", "sg-1", http_status=202))

    async with engine.connect() as connection:
        detail = await connection.scalar(
            select(email_history.c.detail)
            .where(email_history.c.email_id == email_id)
            .order_by(email_history.c.id.desc())
            .limit(1)
        )
    assert "test_mode" not in detail


# -- the attachment source on LocalStack S3 -------------------------------------------------


async def test_reads_an_attachment_from_the_bucket(
    localstack_endpoint: str, sqs_queues: Any
) -> None:
    _, s3 = localstack_clients(localstack_endpoint)
    s3.put_object(Bucket=sqs_queues.attachments_bucket, Key="e-1/0", Body=PDF)
    source = S3AttachmentSource(
        OnFirstUse(lambda: s3_client(localstack_endpoint, "us-east-1", 4)),
        sqs_queues.attachments_bucket,
    )

    assert await source.fetch("e-1/0") == PDF


async def test_a_key_that_is_not_in_the_bucket_is_missing(
    localstack_endpoint: str, sqs_queues: Any
) -> None:
    source = S3AttachmentSource(
        OnFirstUse(lambda: s3_client(localstack_endpoint, "us-east-1", 4)),
        sqs_queues.attachments_bucket,
    )

    with pytest.raises(AttachmentMissingError, match="expired, or never stored"):
        await source.fetch(f"{uuid.uuid4()}/0")


@pytest.mark.parametrize("where", ["no such bucket", "unreachable"])
async def test_a_store_that_cannot_answer_is_unavailable_not_missing(
    localstack_endpoint: str, where: str
) -> None:
    if where == "unreachable":
        client = s3_client("http://127.0.0.1:9", "us-east-1", 1)
        bucket = "mailstack-attachments"
    else:
        client = s3_client(localstack_endpoint, "us-east-1", 1)
        bucket = f"no-such-bucket-{uuid.uuid4().hex[:8]}"

    with pytest.raises(AttachmentStoreUnavailableError):
        await S3AttachmentSource(lambda: client, bucket).fetch("e-1/0")
