"""In-memory fakes of the processor's ports: the delivery store, the providers and the queue."""

import asyncio
import inspect
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mailstack_core.status import EmailStatus
from mailstack_processor.delivery import (
    AttachmentMissingError,
    AttachmentRef,
    AttachmentStoreUnavailableError,
    Claim,
    ClaimState,
    RetryPolicy,
)
from mailstack_processor.providers.base import (
    Mailbox,
    OutgoingEmail,
    ProviderError,
    SendReceipt,
)
from mailstack_processor.providers.elasticemail import ElasticEmailSender
from mailstack_processor.providers.http import provider_session
from mailstack_processor.providers.sendgrid import SendGridSender
from mailstack_processor.queue import ReceivedMessage


@dataclass
class StoredEmail:
    email: OutgoingEmail
    status: EmailStatus = EmailStatus.QUEUED
    attempts: int = 0
    lease_remaining_seconds: float = 0.0
    attachments: tuple[AttachmentRef, ...] = ()


@dataclass(frozen=True)
class HistoryRow:
    status: EmailStatus
    provider: str | None
    detail: dict[str, Any]


class InMemoryDeliveryStore:
    """DeliveryStore over a dict, with the history each state change appends."""

    def __init__(self) -> None:
        self.emails: dict[uuid.UUID, StoredEmail] = {}
        self.history: dict[uuid.UUID, list[HistoryRow]] = {}
        self.claims: list[tuple[uuid.UUID, int, int]] = []
        self.receipts: dict[uuid.UUID, SendReceipt] = {}
        # The tenant's suppression list (one tenant in these tests), read by each claim.
        self.suppressed: set[str] = set()

    def add(
        self,
        email: OutgoingEmail,
        status: EmailStatus = EmailStatus.QUEUED,
        *,
        attempts: int = 0,
        lease_remaining_seconds: float = 0.0,
        attachments: Sequence[AttachmentRef] = (),
    ) -> None:
        self.emails[email.id] = StoredEmail(
            email, status, attempts, lease_remaining_seconds, tuple(attachments)
        )
        self.history[email.id] = [HistoryRow(EmailStatus.QUEUED, None, {"outcome": "accepted"})]

    def status(self, email_id: uuid.UUID) -> EmailStatus:
        return self.emails[email_id].status

    def after_claim(self, email_id: uuid.UUID) -> list[tuple[EmailStatus, str | None]]:
        """The history rows written after the claim, as (status, provider)."""
        return [(row.status, row.provider) for row in self.history[email_id][2:]]

    def _append(
        self, email_id: uuid.UUID, status: EmailStatus, provider: str | None, detail: dict[str, Any]
    ) -> None:
        self.history[email_id].append(HistoryRow(status, provider, detail))

    async def claim(self, email_id: uuid.UUID, lease_seconds: int, receive_count: int) -> Claim:
        self.claims.append((email_id, lease_seconds, receive_count))
        stored = self.emails.get(email_id)
        if stored is None:
            return Claim(ClaimState.MISSING)
        if stored.status is EmailStatus.CANCELED:
            return Claim(ClaimState.CANCELED)
        if stored.status is EmailStatus.SCHEDULED:
            return Claim(ClaimState.NOT_DUE)
        if stored.status.is_terminal:
            return Claim(ClaimState.FINAL)
        if stored.status is EmailStatus.PROCESSING and stored.lease_remaining_seconds > 0:
            return Claim(ClaimState.BUSY, lease_remaining_seconds=stored.lease_remaining_seconds)
        stored.status = EmailStatus.PROCESSING
        stored.attempts += 1
        stored.lease_remaining_seconds = lease_seconds
        self._append(email_id, EmailStatus.PROCESSING, None, {"attempt": stored.attempts})
        addresses = stored.email.recipient_addresses
        return Claim(
            ClaimState.CLAIMED,
            stored.email,
            stored.attempts,
            attachments=stored.attachments,
            suppressed=frozenset(address for address in addresses if address in self.suppressed),
        )

    async def record_failed_attempt(
        self, email_id: uuid.UUID, provider: str, detail: dict[str, Any]
    ) -> None:
        assert self.emails[email_id].status is EmailStatus.PROCESSING
        self._append(email_id, EmailStatus.FAILED, provider, detail)

    async def mark_sent(
        self,
        email_id: uuid.UUID,
        receipt: SendReceipt,
        skipped: Sequence[str] = (),
        suppressed: Sequence[str] = (),
    ) -> None:
        self.emails[email_id].status = EmailStatus.SENT
        self.receipts[email_id] = receipt
        detail: dict[str, Any] = {"message_id": receipt.message_id}
        if skipped:
            detail["skipped"] = list(skipped)
        if suppressed:
            detail["suppressed"] = list(suppressed)
        if receipt.test_mode:
            detail["test_mode"] = True
        self._append(email_id, EmailStatus.SENT, receipt.provider, detail)

    async def mark_failed(
        self, email_id: uuid.UUID, provider: str | None, detail: dict[str, Any]
    ) -> None:
        self.emails[email_id].status = EmailStatus.FAILED
        self._append(email_id, EmailStatus.FAILED, provider, detail)

    async def release_for_retry(self, email_id: uuid.UUID, detail: dict[str, Any]) -> None:
        self.emails[email_id].status = EmailStatus.QUEUED
        self.emails[email_id].lease_remaining_seconds = 0
        self._append(email_id, EmailStatus.QUEUED, None, detail)


class ScriptedSender:
    """An EmailSender that answers each call with the next outcome (the last one repeats)."""

    def __init__(
        self, name: str, *outcomes: SendReceipt | ProviderError, log: list[str] | None = None
    ) -> None:
        assert outcomes, "a scripted sender needs at least one outcome"
        self.name = name
        self._outcomes = list(outcomes)
        self._log = log if log is not None else []
        self.calls: list[OutgoingEmail] = []

    async def send(self, email: OutgoingEmail) -> SendReceipt:
        self.calls.append(email)
        self._log.append(self.name)
        outcome = self._outcomes.pop(0) if len(self._outcomes) > 1 else self._outcomes[0]
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome


class FakeAttachmentSource:
    """AttachmentSource over a dict; `unavailable` makes every fetch fail as an outage would."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.unavailable = False
        self.fetched: list[str] = []

    async def fetch(self, key: str) -> bytes:
        self.fetched.append(key)
        if self.unavailable:
            raise AttachmentStoreUnavailableError("S3 did not answer")
        if key not in self.objects:
            raise AttachmentMissingError(f"{key} is not there")
        return self.objects[key]


class FakeQueue:
    """EmailQueue: hands out scripted messages, honouring max_messages like SQS does."""

    def __init__(self) -> None:
        self.waiting: list[ReceivedMessage] = []
        self.deleted: list[str] = []
        self.visibility: list[tuple[str, int]] = []
        self.receive_calls: list[int] = []
        # When set, a receive with nothing waiting blocks until this event, then returns these.
        self.hold_until: asyncio.Event | None = None
        self.after_hold: list[ReceivedMessage] = []
        # When set, a delete waits for this event before it is done (a batch call in flight).
        self.deletes_wait_for: asyncio.Event | None = None

    def put(self, *messages: ReceivedMessage) -> None:
        self.waiting.extend(messages)

    async def receive(self, max_messages: int) -> list[ReceivedMessage]:
        self.receive_calls.append(max_messages)
        if not self.waiting and self.hold_until is not None:
            await self.hold_until.wait()
            self.hold_until = None
            batch, self.after_hold = self.after_hold, []
            return batch
        if not self.waiting:
            await asyncio.sleep(0.005)  # a (very) short poll
            return []
        batch, self.waiting = self.waiting[:max_messages], self.waiting[max_messages:]
        return batch

    async def delete(self, message: ReceivedMessage) -> None:
        if self.deletes_wait_for is not None:
            await self.deletes_wait_for.wait()
        self.deleted.append(message.message_id)

    async def change_visibility(self, message: ReceivedMessage, seconds: int) -> None:
        self.visibility.append((message.message_id, seconds))


def _outgoing(**overrides: Any) -> OutgoingEmail:
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "sender": Mailbox("orders@example.com", "Shop"),
        "to": (Mailbox("alex@example.com", "Alex"),),
        "subject": "Your order",
        "text": "Thanks for your order.",
        "html": "<p>Thanks for your order.</p>",
    }
    fields.update(overrides)
    return OutgoingEmail(**fields)


def _message(body: str, receive_count: int = 1, message_id: str | None = None) -> ReceivedMessage:
    message_id = message_id or f"m-{uuid.uuid4().hex[:8]}"
    return ReceivedMessage(message_id, f"rh-{message_id}", body, receive_count)


@dataclass
class Scenario:
    """Helpers handed to tests through one fixture (test modules cannot import conftest)."""

    email: Callable[..., OutgoingEmail] = _outgoing
    sender: Callable[..., ScriptedSender] = ScriptedSender
    message: Callable[..., ReceivedMessage] = _message


@pytest.fixture
def make() -> Scenario:
    return Scenario()


@pytest.fixture
def store() -> InMemoryDeliveryStore:
    return InMemoryDeliveryStore()


@pytest.fixture
def queue() -> FakeQueue:
    return FakeQueue()


@pytest.fixture
def attachment_source() -> FakeAttachmentSource:
    return FakeAttachmentSource()


@pytest.fixture
def policy() -> RetryPolicy:
    return RetryPolicy(
        max_attempts=5, backoff_base_seconds=10, backoff_max_seconds=300, poison_backoff_seconds=7
    )


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    content: bytes


class ProviderHttp:
    """A local HTTP server standing in for both providers: records each request it gets and
    answers with `respond`, whose httpx.Response says the status, headers and body (or DROP).
    The senders reach it over real HTTP, through the processor's own aiohttp session."""

    EE_KEY = "ee-key-123"
    SG_KEY = "SG.key-456"
    # What `respond` returns to have the server close the connection without an answer.
    DROP = object()

    def __init__(self, timeout_seconds: float = 3.0) -> None:
        self.requests: list[RecordedRequest] = []
        self.respond: Callable[[RecordedRequest], Any] = lambda _: httpx.Response(500)
        app = web.Application(client_max_size=64 * 2**20, handler_args={"access_log": None})
        self.server = TestServer(app)
        self.server.app.router.add_route("*", "/{path:.*}", self._handle)
        self.session = provider_session(max_connections=10)
        self.timeout_seconds = timeout_seconds

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        recorded = RecordedRequest(
            request.method, request.path, request.headers, await request.read()
        )
        self.requests.append(recorded)
        answer = self.respond(recorded)
        if inspect.isawaitable(answer):
            answer = await answer
        if answer is self.DROP:
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        assert isinstance(answer, httpx.Response)
        headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
        return web.Response(status=answer.status_code, headers=headers, body=answer.content)

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("/"))

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)

    def sender(
        self, provider: str, timeout_seconds: float | None = None, base_url: str | None = None
    ) -> Any:
        timeout = timeout_seconds if timeout_seconds is not None else self.timeout_seconds
        base = base_url or self.base_url
        if provider == "elasticemail":
            return ElasticEmailSender(self.session, base.rstrip("/"), self.EE_KEY, timeout)
        return SendGridSender(self.session, base, self.SG_KEY, timeout)


@pytest.fixture
async def provider_http() -> AsyncIterator[ProviderHttp]:
    http = ProviderHttp()
    async with http.server, http.session:
        yield http
