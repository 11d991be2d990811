"""The dispatcher's signing, retry schedule, SSRF-guarded connections and one attempt's
outcome, with fakes for the outbox and the endpoint."""

import asyncio
import json
import random
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpcore
import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from mailstack_core import webhooks as hooks
from mailstack_processor.webhooks.dispatcher import (
    Dispatcher,
    RetryPolicy,
    body_of,
    signed_headers,
)
from mailstack_processor.webhooks.network import GuardedNetworkBackend, guarded_client
from mailstack_processor.webhooks.settings import DispatcherSettings
from mailstack_processor.webhooks.store import Attempt, ClaimedEvent
from mailstack_testing.waiting import eventually_async

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def an_event(**overrides: Any) -> ClaimedEvent:
    values: dict[str, Any] = {
        "id": "msg_0123456789abcdef0123456789abcdef",
        "endpoint_id": uuid.uuid4(),
        "type": "email.sent",
        "payload": {
            "type": "email.sent",
            "timestamp": "2026-12-02T12:00:00.000000Z",
            "data": {"email_id": str(uuid.uuid4()), "status": "SENT", "detail": {"é": "ü"}},
        },
        "attempts": 1,
        "created_at": NOW,
        "url": "https://hooks.example.org/in",
        "secret": SECRET,
    }
    return ClaimedEvent(**(values | overrides))


def test_the_signature_verifies_with_the_standard_webhooks_library() -> None:
    event = an_event()
    now = datetime.now(UTC)
    body = body_of(event)
    headers = signed_headers(event, body, now)

    assert headers["webhook-id"] == event.id
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert Webhook(SECRET).verify(body.encode(), headers) == event.payload


def test_a_tampered_body_or_another_secret_does_not_verify() -> None:
    event = an_event()
    body = body_of(event)
    headers = signed_headers(event, body, datetime.now(UTC))

    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace("SENT", "FAILED"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 32).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, headers | {"webhook-id": "msg_other"})


def test_backoff_first_retry_within_ten_seconds_then_doubling_up_to_the_cap() -> None:
    policy = RetryPolicy()
    rng = random.Random(7)
    for attempt, ceiling in [(1, 5), (2, 10), (3, 20), (4, 40), (10, 2560), (11, 3600)]:
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays), attempt
        assert max(delays) <= ceiling, attempt
        assert max(delays) - min(delays) > ceiling / 4, "jitter spreads the retries"
    assert policy.delay(1, rng) <= 10
    assert policy.delay(500, rng) <= 3600


def test_retries_go_on_for_more_than_a_day_then_stop_at_the_event_age_limit() -> None:
    policy = RetryPolicy()
    rng = random.Random(1)
    event, now, attempts = an_event(), NOW, 0
    while (retry_at := policy.next_attempt(event, now, rng)) is not None:
        attempts += 1
        now = retry_at
        event = an_event(attempts=event.attempts + 1)
    assert now - NOW > timedelta(hours=24)
    assert now - NOW <= policy.max_event_age
    assert attempts > 30


class Endpoint:
    """An httpx MockTransport answering with `status` (or raising `error`), keeping requests."""

    def __init__(self, status: int = 200, error: Exception | None = None) -> None:
        self.status, self.error = status, error
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return httpx.Response(self.status)


def dispatcher(endpoint: Endpoint, outbox: Any = None, **kwargs: Any) -> Dispatcher:
    client = httpx.AsyncClient(transport=httpx.MockTransport(endpoint))
    return Dispatcher(outbox, client, RetryPolicy(), http_hosts=[], clock=lambda: NOW, **kwargs)


async def test_an_attempt_posts_the_signed_body_and_2xx_is_delivered() -> None:
    endpoint = Endpoint(204)
    attempt = await dispatcher(endpoint).attempt(an_event())

    assert attempt.delivered
    assert attempt.status_code == 204
    assert attempt.error is None
    [request] = endpoint.requests
    assert request.headers["content-type"] == "application/json"
    payload = json.loads(request.content)
    assert payload["type"] == "email.sent"
    signed = Webhook(SECRET).sign(request.headers["webhook-id"], NOW, request.content.decode())
    assert request.headers["webhook-signature"] == signed


@pytest.mark.parametrize("status", [301, 400, 410, 500, 503])
async def test_any_other_answer_is_a_failure(status: int) -> None:
    attempt = await dispatcher(Endpoint(status)).attempt(an_event())
    assert not attempt.delivered
    assert attempt.status_code == status


async def test_no_answer_is_a_failure_with_the_error() -> None:
    endpoint = Endpoint(error=httpx.ConnectTimeout("timed out"))
    attempt = await dispatcher(endpoint).attempt(an_event())
    assert not attempt.delivered
    assert attempt.status_code is None
    assert attempt.error == "ConnectTimeout: timed out"


async def test_a_url_no_longer_allowed_is_not_called() -> None:
    endpoint = Endpoint()
    attempt = await dispatcher(endpoint).attempt(an_event(url="http://hooks.example.org/in"))
    assert attempt.error is not None
    assert attempt.error.startswith("blocked: must use https")
    assert endpoint.requests == []


class FakeOutbox:
    def __init__(self, events: list[ClaimedEvent]) -> None:
        self.events = events
        self.recorded: list[tuple[str, Attempt, datetime | None]] = []

    async def claim(self, now: datetime, limit: int, lease: timedelta) -> list[ClaimedEvent]:
        claimed, self.events = self.events[:limit], self.events[limit:]
        return claimed

    async def record(
        self, event: ClaimedEvent, attempt: Attempt, retry_at: datetime | None, _: timedelta
    ) -> tuple[bool, bool]:
        self.recorded.append((event.id, attempt, retry_at))
        return False, False


async def test_run_delivers_every_claimed_event_and_schedules_the_failed_ones() -> None:
    events = [an_event(id=f"msg_{n}") for n in range(5)]
    outbox = FakeOutbox(events)
    endpoint = Endpoint(500)
    running = dispatcher(endpoint, outbox, concurrency=2, poll_seconds=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    await eventually_async(lambda: len(outbox.recorded) == 5, 5, what="five attempts recorded")
    stop.set()
    await asyncio.wait_for(task, 5)

    assert sorted(event_id for event_id, _, _ in outbox.recorded) == [e.id for e in events]
    for _, attempt, retry_at in outbox.recorded:
        assert attempt.status_code == 500
        assert retry_at is not None
        assert NOW < retry_at <= NOW + timedelta(seconds=5)


async def test_the_guarded_backend_refuses_loopback_unless_allow_listed() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(hooks.BlockedAddressError, match=r"127\.0\.0\.1"):
            await GuardedNetworkBackend(()).connect_tcp("127.0.0.1", port, timeout=2)
        with pytest.raises(hooks.BlockedAddressError):
            await GuardedNetworkBackend(()).connect_tcp("localhost", port, timeout=2)
        allowed = GuardedNetworkBackend(hooks.parse_networks("127.0.0.0/8"))
        stream = await allowed.connect_tcp("localhost", port, timeout=2)
        await stream.aclose()


async def test_the_guarded_client_never_reaches_the_metadata_address() -> None:
    async with guarded_client((), 1, 2) as client:
        with pytest.raises(hooks.BlockedAddressError, match=r"169\.254\.169\.254"):
            await client.post("http://169.254.169.254/latest/meta-data/")
    with pytest.raises(httpcore.ConnectError):
        await GuardedNetworkBackend(()).connect_unix_socket("socket")


def test_settings_need_a_lease_longer_than_an_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x@127.0.0.1/x")
    monkeypatch.setenv("WEBHOOK_HTTP_HOSTS", "127.0.0.1, localhost")
    assert DispatcherSettings().webhook_http_hosts == ["127.0.0.1", "localhost"]
    monkeypatch.setenv("WEBHOOK_LEASE_SECONDS", "15")
    with pytest.raises(ValueError, match="WEBHOOK_LEASE_SECONDS"):
        DispatcherSettings()
