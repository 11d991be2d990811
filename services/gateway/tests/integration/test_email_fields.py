"""Headers, tags, metadata and attachments on the real Postgres and the real LocalStack S3."""

import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from mailstack_core.database import normalize_database_url
from mailstack_core.tables import emails
from mailstack_gateway.auth import ALL_SCOPES
from mailstack_gateway.intake import StoredAttachment, parse_email
from mailstack_gateway.keys import KeyAdmin
from mailstack_gateway.main import create_app
from mailstack_gateway.repository import EmailReader, EmailWriter
from mailstack_gateway.settings import GatewaySettings
from mailstack_testing.aws import localstack_clients

pytestmark = pytest.mark.integration

TENANT = "acme"
EMAIL: dict[str, Any] = {
    "from": {"email": "app@example.com"},
    "to": [{"email": "user@example.com"}],
    "subject": "Your invoice",
    "text": "Attached.",
}
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 64
LOGO = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


def _writer(engine: AsyncEngine) -> EmailWriter:
    return EmailWriter(engine, outbox_grace_seconds=60, outbox_max_backoff_seconds=60)


async def test_stores_headers_tags_metadata_and_the_attachment_manifest(
    engine: AsyncEngine,
) -> None:
    email = parse_email(
        EMAIL
        | {
            "headers": {"X-Entity-Ref-ID": "order-1234"},
            "tags": ["welcome", "beta"],
            "metadata": {"user_id": "42"},
        }
    )
    email_id = uuid.uuid4()
    manifest = StoredAttachment(
        key=f"{email_id}/0",
        filename="invoice.pdf",
        content_type="application/pdf",
        disposition="attachment",
        content_id=None,
        size=len(PDF),
        sha256=hashlib.sha256(PDF).hexdigest(),
    )

    await _writer(engine).save_queued(TENANT, email_id, email, "{}", attachments=[manifest])

    row = await EmailReader(engine).get(TENANT, email_id)
    assert row is not None
    assert row.headers == {"X-Entity-Ref-ID": "order-1234"}
    assert row.tags == ["welcome", "beta"]
    assert row.metadata == {"user_id": "42"}
    assert row.attachments == [manifest.to_json()]


async def test_lists_only_the_emails_carrying_a_tag(engine: AsyncEngine) -> None:
    writer = _writer(engine)
    tagged: dict[str, list[uuid.UUID]] = {"welcome": [], "receipt": []}
    for tags in (["welcome"], ["receipt"], ["welcome", "beta"], []):
        email_id = uuid.uuid4()
        await writer.save_queued(TENANT, email_id, parse_email(EMAIL | {"tags": tags}), "{}")
        for tag in tags:
            tagged.setdefault(tag, []).append(email_id)
    reader = EmailReader(engine)

    welcome = await reader.page(TENANT, None, 10, None, tag="welcome")
    beta = await reader.page(TENANT, None, 10, None, tag="beta")

    assert [row.id for row in welcome.rows] == list(reversed(tagged["welcome"]))
    assert [row.tags for row in welcome.rows] == [["welcome", "beta"], ["welcome"]]
    assert [row.id for row in beta.rows] == tagged["beta"]
    assert (await reader.page(TENANT, None, 10, None, tag="nothing")).rows == []
    assert len((await reader.page(TENANT, None, 10, None)).rows) == 4


async def test_tags_have_a_gin_index_that_answers_containment(engine: AsyncEngine) -> None:
    # Which index the planner picks depends on the data; that this one can answer `@>` (the
    # operator the tag filter uses) is what the schema promises.
    query = (
        select(emails.c.id)
        .where(emails.c.tags.contains(["welcome"]))
        .compile(engine.sync_engine, compile_kwargs={"literal_binds": True})
    )
    async with engine.connect() as connection:
        definition = await connection.scalar(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = 'emails_tags_idx'")
        )
        await connection.execute(text("SET enable_seqscan = off"))
        plan = "\n".join((await connection.execute(text(f"EXPLAIN {query}"))).scalars())
    assert definition is not None
    assert "USING gin (tags)" in definition
    assert "emails_tags_idx" in plan, plan


# -- the whole app: attachments go to S3 before the email commits ---------------------------


def _admin_key(database_url: str) -> str:
    engine = create_engine(normalize_database_url(database_url))
    try:
        admin = KeyAdmin(engine)
        admin.ensure_tenant(TENANT)
        return admin.create_key(TENANT, "fields", ALL_SCOPES)[1].token
    finally:
        engine.dispose()


async def _gateway(
    database_url: str, queues: Any, endpoint: str, bucket: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(
        database_url=database_url,
        email_queue_url=queues.email_queue_url,
        attachments_bucket=bucket,
        aws_endpoint_url=endpoint,
        outbox_grace_seconds=60,
    )
    app = create_app(settings, run_relay=False)
    headers = {"Authorization": f"Bearer {_admin_key(database_url)}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway", headers=headers
        ) as client,
    ):
        yield client


def _with_attachments() -> dict[str, Any]:
    return EMAIL | {
        "html": '<img src="cid:logo">',
        "attachments": [
            {
                "filename": "invoice.pdf",
                "content": base64.b64encode(PDF).decode(),
                "content_type": "application/pdf",
            },
            {
                "filename": "logo.png",
                "content": base64.b64encode(LOGO).decode(),
                "content_type": "image/png",
                "disposition": "inline",
                "content_id": "logo",
            },
        ],
    }


async def test_an_accepted_email_has_its_attachments_in_s3_and_only_their_description_in_postgres(
    database_url: str, localstack_endpoint: str, sqs_queues: Any
) -> None:
    async for client in _gateway(
        database_url, sqs_queues, localstack_endpoint, sqs_queues.attachments_bucket
    ):
        response = await client.post("/v1/emails", json=_with_attachments())
        assert response.status_code == 202, response.text
        email_id = response.json()["id"]
        shown = (await client.get(f"/v1/emails/{email_id}")).json()

    _, s3 = localstack_clients(localstack_endpoint)
    stored = {
        key: s3.get_object(Bucket=sqs_queues.attachments_bucket, Key=key)
        for key in (f"{email_id}/0", f"{email_id}/1")
    }
    assert stored[f"{email_id}/0"]["Body"].read() == PDF
    assert stored[f"{email_id}/0"]["ContentType"] == "application/pdf"
    assert stored[f"{email_id}/1"]["Body"].read() == LOGO
    assert [(a["filename"], a["size"], a["sha256"]) for a in shown["attachments"]] == [
        ("invoice.pdf", len(PDF), hashlib.sha256(PDF).hexdigest()),
        ("logo.png", len(LOGO), hashlib.sha256(LOGO).hexdigest()),
    ]

    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.connect() as connection:
            row = connection.execute(
                select(emails.c.request_body, emails.c.attachments).where(
                    emails.c.id == uuid.UUID(email_id)
                )
            ).one()
    finally:
        engine.dispose()
    assert [a["key"] for a in row.attachments] == [f"{email_id}/0", f"{email_id}/1"]
    audit = json.loads(row.request_body)
    assert base64.b64encode(PDF).decode() not in row.request_body
    assert audit["attachments"][0] == {
        "filename": "invoice.pdf",
        "content_type": "application/pdf",
        "size": len(PDF),
        "sha256": hashlib.sha256(PDF).hexdigest(),
    }


async def test_no_email_is_accepted_when_its_attachments_cannot_be_stored(
    database_url: str, localstack_endpoint: str, sqs_queues: Any
) -> None:
    missing_bucket = f"no-such-bucket-{uuid.uuid4().hex[:8]}"
    async for client in _gateway(database_url, sqs_queues, localstack_endpoint, missing_bucket):
        response = await client.post("/v1/emails", json=_with_attachments())
        assert response.status_code == 503
        assert response.json()["error"] == "attachment_storage_unavailable"
        listed = (await client.get("/v1/emails")).json()
        assert listed["items"] == []
