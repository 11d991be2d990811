"""Delivering the webhook outbox: claim due events, sign and post each, record the attempt,
schedule the retry. At least once: an event is done only once its endpoint answered 2xx and
that was recorded; a dispatcher that dies mid-delivery leaves a claim that lapses, and the event
is posted again, with the same `webhook-id`.

Retries: the n-th failed attempt waits base * 2^(n-1) seconds, at most `max`, with jitter
(between half and the whole of it): with the defaults the first retry comes within 5 s, then
within 10 s, 20 s, ... up to an hour between attempts, until the event is
WEBHOOK_MAX_EVENT_AGE_SECONDS old (3 days). An endpoint that has failed for
WEBHOOK_DISABLE_AFTER_SECONDS (3 days) with no success in between is disabled.
"""

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
from standardwebhooks.webhooks import Webhook

from mailstack_core import webhooks as hooks
from mailstack_processor.webhooks import observability as metrics
from mailstack_processor.webhooks.store import Attempt, ClaimedEvent, WebhookOutbox

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
_RNG = random.Random()


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 5.0
    max_seconds: float = 3600.0
    max_event_age: timedelta = timedelta(days=3)
    disable_after: timedelta = timedelta(days=3)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds before the next attempt after failed attempt number `attempt` (1-based)."""
        ceiling = min(self.max_seconds, self.base_seconds * 2.0 ** min(attempt - 1, 32))
        fraction: float = (rng or _RNG).random()
        return ceiling * (0.5 + 0.5 * fraction)

    def next_attempt(
        self, event: ClaimedEvent, now: datetime, rng: random.Random | None = None
    ) -> datetime | None:
        """When to try again, or None: the event is too old for another attempt."""
        at = now + timedelta(seconds=self.delay(event.attempts, rng))
        return at if at <= event.created_at + self.max_event_age else None


def body_of(event: ClaimedEvent) -> str:
    """The exact bytes posted and signed: the payload as compact JSON."""
    return json.dumps(event.payload, separators=(",", ":"), ensure_ascii=False)


def signed_headers(event: ClaimedEvent, body: str, now: datetime) -> dict[str, str]:
    """Standard Webhooks headers: the stable event id, the time of this attempt, and the v1
    HMAC-SHA256 signature of `id.timestamp.body` with the endpoint's secret."""
    return {
        "content-type": "application/json",
        "webhook-id": event.id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(event.secret).sign(event.id, now, body),
    }


class Dispatcher:
    def __init__(
        self,
        outbox: WebhookOutbox,
        client: httpx.AsyncClient,
        policy: RetryPolicy,
        *,
        http_hosts: list[str],
        concurrency: int = 20,
        lease: timedelta = timedelta(seconds=60),
        poll_seconds: float = 1.0,
        clock: Clock = utc_now,
    ) -> None:
        self._outbox = outbox
        self._client = client
        self._policy = policy
        self._http_hosts = http_hosts
        self._concurrency = concurrency
        self._lease = lease
        self._poll_seconds = poll_seconds
        self._clock = clock
        self._in_flight: set[asyncio.Task[None]] = set()

    async def attempt(self, event: ClaimedEvent) -> Attempt:
        """Post the event once; never raises for what the endpoint or the network does."""
        now = self._clock()
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        outcome = "failed"
        try:
            hooks.check_url(event.url, self._http_hosts)
            body = body_of(event)
            response = await self._client.post(
                event.url, content=body.encode(), headers=signed_headers(event, body, now)
            )
            status = response.status_code
            outcome = "delivered" if 200 <= status < 300 else "failed"
        except hooks.InvalidWebhookUrlError as blocked:
            error, outcome = f"blocked: {blocked}", "blocked"
        except httpx.HTTPError as failed:
            error = f"{type(failed).__name__}: {failed}"[:500]
        seconds = time.perf_counter() - started
        metrics.DELIVERIES.labels(outcome=outcome).inc()
        metrics.DELIVERY_SECONDS.observe(seconds)
        return Attempt(now, int(seconds * 1000), status, error)

    async def deliver(self, event: ClaimedEvent) -> None:
        attempt = await self.attempt(event)
        retry_at = None if attempt.delivered else self._policy.next_attempt(event, attempt.at)
        gave_up, disabled = await self._outbox.record(
            event, attempt, retry_at, self._policy.disable_after
        )
        log.info(
            "webhook.attempt",
            event_id=event.id,
            endpoint_id=str(event.endpoint_id),
            type=event.type,
            attempt=event.attempts,
            status_code=attempt.status_code,
            error=attempt.error,
            retry_at=retry_at.isoformat() if retry_at else None,
        )
        if gave_up:
            metrics.EVENTS_GIVEN_UP.inc()
            log.warning("webhook.given_up", event_id=event.id, attempts=event.attempts)
        if disabled:
            metrics.ENDPOINTS_DISABLED.inc()
            log.warning("webhook.endpoint_disabled", endpoint_id=str(event.endpoint_id))

    async def _deliver_logged(self, event: ClaimedEvent) -> None:
        try:
            await self.deliver(event)
        except Exception:
            # The claim lapses and the event is tried again: nothing is lost.
            log.exception("webhook.record_failed", event_id=event.id)
        finally:
            metrics.IN_FLIGHT.dec()

    async def poll_once(self) -> int:
        """Claim what fits beside the deliveries under way and start them; how many."""
        free = self._concurrency - len(self._in_flight)
        if free <= 0:
            return 0
        claimed = await self._outbox.claim(self._clock(), free, self._lease)
        metrics.LAST_POLL.set(time.time())
        for event in claimed:
            metrics.IN_FLIGHT.inc()
            task = asyncio.create_task(self._deliver_logged(event), name=f"webhook-{event.id}")
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        return len(claimed)

    async def run(self, stop: asyncio.Event, grace_seconds: float = 20.0) -> None:
        """Deliver until `stop`; then let the deliveries under way finish (within the grace)."""
        while not stop.is_set():
            try:
                claimed = await self.poll_once()
            except Exception as error:  # the database is away: try again after a pause
                log.warning("webhook.claim_failed", error=type(error).__name__)
                claimed = 0
            if claimed and len(self._in_flight) < self._concurrency:
                continue
            stopped = asyncio.ensure_future(stop.wait())
            waits: set[asyncio.Future[Any]] = {stopped, *self._in_flight}
            with contextlib.suppress(TimeoutError):
                # Back at once when a slot frees or stop is asked; else after one poll period.
                await asyncio.wait(
                    waits, timeout=self._poll_seconds, return_when=asyncio.FIRST_COMPLETED
                )
            stopped.cancel()
        if self._in_flight:
            log.info("dispatcher.draining", in_flight=len(self._in_flight))
            await asyncio.wait(set(self._in_flight), timeout=grace_seconds)

    async def refresh_stats(self, stop: asyncio.Event, every_seconds: float) -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                backlog = await self._outbox.backlog(self._clock())
                metrics.BACKLOG.set(backlog.due)
                metrics.OLDEST_DUE_AGE.set(backlog.oldest_due_age_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_seconds)
