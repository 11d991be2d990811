"""In-memory fakes of the gateway's adapters, and an app wired with them (no database, no SQS)."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from limits.aio.storage import MemoryStorage

from mailstack_core.status import EmailStatus
from mailstack_gateway import api
from mailstack_gateway.auth import ALL_SCOPES, AuthenticationError, Principal, Scope, bearer_token
from mailstack_gateway.cancellation import Cancellation
from mailstack_gateway.intake import (
    AttachmentStorageUnavailableError,
    Earlier,
    EarlierRequest,
    IdempotencyKey,
    NewEmail,
    RequestInFlight,
    StoredAttachment,
    status_on_acceptance,
)
from mailstack_gateway.middleware import GatewayMiddleware
from mailstack_gateway.ratelimit import RateLimiter
from mailstack_gateway.repository import Page, decode_cursor
from mailstack_gateway.schemas import AttachmentCreate, EmailCreate

CREATED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TENANT = "acme"
OTHER_TENANT = "globex"
# Tokens the fake authenticator knows, and who each one is.
PRINCIPALS = {
    "send-read": Principal(TENANT, frozenset({Scope.SEND, Scope.READ}), "key:send-read"),
    "send-only": Principal(TENANT, frozenset({Scope.SEND}), "key:send-only"),
    "read-only": Principal(TENANT, frozenset({Scope.READ}), "key:read-only"),
    "admin": Principal(TENANT, ALL_SCOPES, "key:admin"),
    "other-tenant": Principal(OTHER_TENANT, frozenset({Scope.SEND, Scope.READ}), "key:other"),
    "tight": Principal(TENANT, frozenset({Scope.SEND, Scope.READ}), "key:tight", 2, 2),
}
AUTH = {"Authorization": "Bearer send-read"}


class FakeAuthenticator:
    """Authenticator: the tokens of PRINCIPALS, parsed from the header as the real one does."""

    async def authenticate(self, authorization: str | None) -> Principal:
        principal = PRINCIPALS.get(bearer_token(authorization))
        if principal is None:
            raise AuthenticationError
        return principal


class FakeWriter:
    """EmailWriter: remembers saved emails; its outbox rows are the saved ids not yet published."""

    def __init__(self) -> None:
        self.saved: dict[uuid.UUID, tuple[EmailCreate, str]] = {}
        self.published: list[uuid.UUID] = []
        self.rescheduled: list[tuple[list[uuid.UUID], str]] = []
        self.save_error: Exception | None = None
        self.mark_error: Exception | None = None
        self.locked: set[uuid.UUID] = set()
        self.tenants: dict[uuid.UUID, str] = {}
        self.keys: dict[tuple[str, str], Earlier] = {}
        # The claims still in flight: the ids their requests will store.
        self.claims: dict[tuple[str, str], tuple[uuid.UUID, ...]] = {}
        # Each save_batch call's ids, in order: one call is one transaction.
        self.batches: list[list[uuid.UUID]] = []
        self.statuses: dict[uuid.UUID, EmailStatus] = {}
        self.attachments: dict[uuid.UUID, list[StoredAttachment]] = {}

    async def claim_key(
        self, tenant_id: str, idempotency: IdempotencyKey, email_ids: Sequence[uuid.UUID]
    ) -> Earlier | None:
        held = self.keys.get((tenant_id, idempotency.key))
        if held is not None:
            return held
        self.keys[(tenant_id, idempotency.key)] = RequestInFlight(idempotency.request_sha256)
        self.claims[(tenant_id, idempotency.key)] = tuple(email_ids)
        return None

    async def release_key(
        self, tenant_id: str, idempotency: IdempotencyKey, email_ids: Sequence[uuid.UUID]
    ) -> None:
        if self.claims.get((tenant_id, idempotency.key)) == tuple(email_ids):
            del self.claims[(tenant_id, idempotency.key)]
            del self.keys[(tenant_id, idempotency.key)]

    async def save_batch(
        self,
        tenant_id: str,
        new_emails: Sequence[NewEmail],
        idempotency: IdempotencyKey | None = None,
    ) -> Earlier | None:
        if self.save_error is not None:
            raise self.save_error
        ids = tuple(new.id for new in new_emails)
        if idempotency is not None:
            held = (tenant_id, idempotency.key)
            if self.claims.get(held) != ids:
                return self.keys.get(held) or RequestInFlight(idempotency.request_sha256)
            del self.claims[held]
            self.keys[held] = EarlierRequest(ids[0], idempotency.request_sha256, ids)
        for new in new_emails:
            self.saved[new.id] = (new.email, new.request_body)
            self.tenants[new.id] = tenant_id
            self.statuses[new.id] = status_on_acceptance(new.email)
            self.attachments[new.id] = list(new.attachments)
        self.batches.append(list(ids))
        return None

    async def cancel(self, tenant_id: str, email_id: uuid.UUID) -> Cancellation | None:
        if self.tenants.get(email_id) != tenant_id:
            return None
        status = self.statuses[email_id]
        if not status.is_cancelable:
            return Cancellation(status, canceled=False)
        self.statuses[email_id] = EmailStatus.CANCELED
        return Cancellation(status, canceled=True)

    @asynccontextmanager
    async def claim_ids(self, email_ids: Sequence[uuid.UUID]) -> AsyncIterator["FakeBatch"]:
        batch = FakeBatch(
            [i for i in email_ids if i not in self.locked and i not in self.published],
            mark_error=self.mark_error,
        )
        yield batch
        self.published.extend(batch.published)
        self.rescheduled.extend(batch.rescheduled)


class FakeReader:
    """EmailReader over dicts; records every call so tests can see which reader was asked."""

    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, SimpleNamespace] = {}
        self.histories: dict[uuid.UUID, list[SimpleNamespace]] = {}
        self.page_rows: list[SimpleNamespace] = []
        self.next_cursor: str | None = None
        self.calls: list[tuple[Any, ...]] = []
        self.page_tenants: list[str] = []

    def _own(self, tenant_id: str, email_id: uuid.UUID) -> SimpleNamespace | None:
        row = self.rows.get(email_id)
        return row if row is not None and row.tenant_id == tenant_id else None

    async def get(self, tenant_id: str, email_id: uuid.UUID) -> SimpleNamespace | None:
        self.calls.append(("get", email_id))
        return self._own(tenant_id, email_id)

    async def history(self, tenant_id: str, email_id: uuid.UUID) -> list[SimpleNamespace] | None:
        self.calls.append(("history", email_id))
        if self._own(tenant_id, email_id) is None:
            return None
        return self.histories.get(email_id, [])

    async def page(
        self,
        tenant_id: str,
        status: EmailStatus | None,
        limit: int,
        cursor: str | None,
        tag: str | None = None,
    ) -> Page:
        self.calls.append(("page", status, limit, cursor, tag))
        self.page_tenants.append(tenant_id)
        if cursor is not None:
            decode_cursor(cursor)  # the real cursor check: raises InvalidCursorError
        return Page(rows=self.page_rows, next_cursor=self.next_cursor)  # type: ignore[arg-type]

    async def ping(self) -> None:
        self.calls.append(("ping",))


class FakePublisher:
    """EmailPublisher: fails the ids in `failing`, or raises `error` for the whole call."""

    def __init__(self) -> None:
        self.batches: list[list[uuid.UUID]] = []
        self.trace_carriers: dict[uuid.UUID, Mapping[str, str]] = {}
        self.failing: set[uuid.UUID] = set()
        self.error: Exception | None = None

    async def publish(
        self,
        email_ids: Sequence[uuid.UUID],
        trace_carriers: Mapping[uuid.UUID, Mapping[str, str]] | None = None,
    ) -> set[uuid.UUID]:
        self.batches.append(list(email_ids))
        self.trace_carriers.update(trace_carriers or {})
        if self.error is not None:
            raise self.error
        return {email_id for email_id in email_ids if email_id in self.failing}

    async def ping(self) -> None:
        return None


class FakeAttachmentStore:
    """AttachmentStore: keeps the bytes by key, or fails every put with `error`."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.error: Exception | None = None

    async def put(self, email_id: uuid.UUID, attachments: Sequence[AttachmentCreate]) -> list[str]:
        if self.error is not None:
            raise AttachmentStorageUnavailableError(str(self.error))
        keys = [f"{email_id}/{index}" for index in range(len(attachments))]
        for key, attachment in zip(keys, attachments, strict=True):
            self.objects[key] = attachment.content
        return keys


class FakeBatch:
    def __init__(self, email_ids: list[uuid.UUID], mark_error: Exception | None = None) -> None:
        self.email_ids = email_ids
        self.published: list[uuid.UUID] = []
        self.rescheduled: list[tuple[list[uuid.UUID], str]] = []
        self.mark_error = mark_error

    async def mark_published(self, email_ids: Sequence[uuid.UUID]) -> None:
        if self.mark_error is not None:
            raise self.mark_error
        self.published.extend(email_ids)

    async def reschedule(self, email_ids: Sequence[uuid.UUID], error: str) -> None:
        self.rescheduled.append((list(email_ids), error))


class FakeOutboxStore:
    """OutboxStore: hands out one batch of the due ids, and records the limit it was asked for."""

    def __init__(self, due: list[uuid.UUID]) -> None:
        self.batch = FakeBatch(due)
        self.limits: list[int] = []
        self.exited = False

    @asynccontextmanager
    async def claim_due(self, limit: int) -> AsyncIterator[FakeBatch]:
        self.limits.append(limit)
        yield self.batch
        self.exited = True


def _email_row(email_id: uuid.UUID, **overrides: Any) -> SimpleNamespace:
    row: dict[str, Any] = {
        "id": email_id,
        "tenant_id": TENANT,
        "status": "SENT",
        "provider": "elasticemail",
        "provider_message_id": "msg-1",
        "sender_email": "orders@example.com",
        "sender_name": "Shop",
        "to_recipients": [{"email": "alex@example.com", "name": "Alex"}],
        "cc_recipients": [],
        "bcc_recipients": [],
        "reply_to": None,
        "subject": "Your order",
        "headers": {},
        "tags": [],
        "metadata": {},
        "attachments": [],
        "attempts": 1,
        "last_error": None,
        "send_at": None,
        "created_at": CREATED_AT,
        "updated_at": CREATED_AT + timedelta(seconds=2),
    }
    row.update(overrides)
    return SimpleNamespace(**row)


def _history_row(status: str, provider: str | None, seconds: int, **detail: Any) -> SimpleNamespace:
    return SimpleNamespace(
        status=status, provider=provider, detail=detail, at=CREATED_AT + timedelta(seconds=seconds)
    )


@pytest.fixture
def email_row() -> Callable[..., SimpleNamespace]:
    return _email_row


@pytest.fixture
def history_row() -> Callable[..., SimpleNamespace]:
    return _history_row


@pytest.fixture
def valid_email() -> dict[str, Any]:
    return {
        "from": {"email": "orders@example.com", "name": "Shop"},
        "to": [{"email": "alex@example.com", "name": "Alex"}],
        "subject": "Your order",
        "text": "Thanks for your order.",
    }


@pytest.fixture
def writer() -> FakeWriter:
    return FakeWriter()


@pytest.fixture
def primary_reader() -> FakeReader:
    return FakeReader()


@pytest.fixture
def replica_reader() -> FakeReader:
    return FakeReader()


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def attachment_store() -> FakeAttachmentStore:
    return FakeAttachmentStore()


@pytest.fixture
def make_outbox() -> Callable[[list[uuid.UUID]], FakeOutboxStore]:
    return FakeOutboxStore


MAX_REQUEST_BYTES = 4096


@pytest.fixture
def max_request_bytes() -> int:
    return MAX_REQUEST_BYTES


@asynccontextmanager
async def _client(services: api.Services) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.state.services = services
    api.install(app)
    app.add_middleware(GatewayMiddleware, quota_state=api.QUOTA_STATE)
    # An unhandled error comes back as the 500 a real client would see, so tests can assert on it.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    # The inline publisher runs beside the app, as main.create_app's lifespan runs it.
    publishing = asyncio.create_task(services.inline.run())
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway.test", headers=AUTH
        ) as http:
            yield http
    finally:
        publishing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publishing


@pytest.fixture
async def client(
    writer: FakeWriter,
    primary_reader: FakeReader,
    publisher: FakePublisher,
    attachment_store: FakeAttachmentStore,
    max_request_bytes: int,
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with a single (primary) reader."""
    services = api.Services(
        writer=writer,  # type: ignore[arg-type]
        primary_reader=primary_reader,  # type: ignore[arg-type]
        replica_reader=None,
        publisher=publisher,  # type: ignore[arg-type]
        attachments=attachment_store,
        max_request_bytes=max_request_bytes,
        authenticator=FakeAuthenticator(),  # type: ignore[arg-type]
        rate_limiter=RateLimiter(MemoryStorage(), send_per_minute=1000, read_per_minute=1000),
    )
    async with _client(services) as http:
        yield http


@pytest.fixture
async def replica_client(
    writer: FakeWriter,
    primary_reader: FakeReader,
    replica_reader: FakeReader,
    publisher: FakePublisher,
    attachment_store: FakeAttachmentStore,
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with a read replica in front of the primary."""
    services = api.Services(
        writer=writer,  # type: ignore[arg-type]
        primary_reader=primary_reader,  # type: ignore[arg-type]
        replica_reader=replica_reader,  # type: ignore[arg-type]
        publisher=publisher,  # type: ignore[arg-type]
        attachments=attachment_store,
        max_request_bytes=MAX_REQUEST_BYTES,
        authenticator=FakeAuthenticator(),  # type: ignore[arg-type]
        rate_limiter=RateLimiter(MemoryStorage(), send_per_minute=1000, read_per_minute=1000),
    )
    async with _client(services) as http:
        yield http
