"""The outbox relay: publishes accepted emails that the inline publish did not queue."""

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass
from typing import Protocol

import structlog

from mailstack_core.queueing import SQS_BATCH_LIMIT, TraceCarrier, current_trace_carrier
from mailstack_gateway.observability import EMAILS_REPUBLISHED, OUTBOX_DEPTH, OUTBOX_OLDEST_AGE

log = structlog.get_logger(__name__)

BATCH_SIZE = SQS_BATCH_LIMIT


class DueBatch(Protocol):
    @property
    def email_ids(self) -> Sequence[uuid.UUID]: ...

    async def mark_published(self, email_ids: Sequence[uuid.UUID]) -> None: ...

    async def reschedule(self, email_ids: Sequence[uuid.UUID], error: str) -> None: ...


class OutboxStore(Protocol):
    def claim_due(self, limit: int) -> AbstractAsyncContextManager[DueBatch, bool | None]:
        """Lock due outbox rows (skipping rows other relays hold) for the life of the context."""

    def claim_ids(
        self, email_ids: Sequence[uuid.UUID]
    ) -> AbstractAsyncContextManager[DueBatch, bool | None]:
        """Lock these emails' outbox rows, skipping any another publisher holds."""


@dataclass(frozen=True)
class OutboxBacklog:
    depth: int
    oldest_age_seconds: float  # 0 when the outbox is empty


class StrandedEmails(Protocol):
    async def republish_stranded(self, after_seconds: float, limit: int) -> list[uuid.UUID]:
        """Give emails whose queue message seems lost an outbox row again; return their ids."""

    async def forget_expired_keys(self, limit: int = 1000) -> int:
        """Delete idempotency keys past their 24 h; return how many."""

    async def outbox_backlog(self) -> OutboxBacklog:
        """How many outbox rows there are, and how old the oldest is."""


TraceCarriers = Mapping[uuid.UUID, TraceCarrier]


class EmailPublisher(Protocol):
    async def publish(
        self, email_ids: Sequence[uuid.UUID], trace_carriers: TraceCarriers | None = None
    ) -> set[uuid.UUID]:
        """Publish one message per id (with the trace context `trace_carriers` holds for it);
        return the ids that could not be published."""


async def publish_now(
    email_ids: Sequence[uuid.UUID],
    store: OutboxStore,
    publisher: EmailPublisher,
    trace_carriers: TraceCarriers | None = None,
) -> None:
    """Publish right after acceptance. The rows stay locked while publishing, so the relay
    never publishes the same email at the same time; whatever fails here is left to it."""
    try:
        async with store.claim_ids(email_ids) as batch:
            await _publish_batch(batch, publisher, trace_carriers)
    except Exception as error:  # the outbox rows remain; the relay publishes them later
        log.warning(
            "outbox.publish_now_failed", email_ids=[str(i) for i in email_ids], error=str(error)
        )


class InlinePublisher:
    """Publishes emails right after they are accepted, off the request path. Emails accepted
    close together go out in one queue call and one outbox transaction (up to the SQS batch
    limit); whatever it does not publish (a crash, a queue outage) stays in the outbox for the
    relay, so nothing here needs to be durable."""

    def __init__(
        self, store: OutboxStore, publisher: EmailPublisher, linger_seconds: float = 0.02
    ) -> None:
        self._store = store
        self._publisher = publisher
        # How long a batch waits for company: each queue call costs far more than one more id.
        self._linger = linger_seconds
        # Each email with the trace context of the request that accepted it.
        self._pending: asyncio.Queue[tuple[uuid.UUID, TraceCarrier]] = asyncio.Queue()

    def submit(self, email_id: uuid.UUID) -> None:
        self._pending.put_nowait((email_id, current_trace_carrier()))

    async def run(self) -> None:
        while True:
            batch = [await self._pending.get()]
            deadline = asyncio.get_running_loop().time() + self._linger
            # asyncio.timeout, not wait_for: wait_for can swallow a cancellation that arrives
            # as the get completes, and the runner would then never stop.
            with suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    while len(batch) < BATCH_SIZE:
                        batch.append(await self._pending.get())
            carriers = {email_id: carrier for email_id, carrier in batch if carrier}
            await publish_now(
                [email_id for email_id, _ in batch], self._store, self._publisher, carriers
            )
            for _ in batch:
                self._pending.task_done()

    async def drain(self, timeout_seconds: float) -> None:
        """At shutdown, before the runners are cancelled: publish what is pending, for a
        bounded time; whatever is left stays in the outbox for the relay."""
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout_seconds):
                await self._pending.join()


async def relay_once(store: OutboxStore, publisher: EmailPublisher) -> int:
    """Publish one batch of due outbox rows; return how many were published."""
    async with store.claim_due(BATCH_SIZE) as batch:
        return await _publish_batch(batch, publisher)


async def _publish_batch(
    batch: DueBatch, publisher: EmailPublisher, trace_carriers: TraceCarriers | None = None
) -> int:
    if not batch.email_ids:
        return 0
    try:
        failed = await publisher.publish(batch.email_ids, trace_carriers)
        error = "publish refused by the queue"
    except Exception as exc:
        failed, error = set(batch.email_ids), str(exc)
    published = [email_id for email_id in batch.email_ids if email_id not in failed]
    if published:
        await batch.mark_published(published)
        log.info("outbox.published", count=len(published))
    if failed:
        await batch.reschedule(sorted(failed), error)
        log.warning("outbox.publish_failed", count=len(failed), error=error)
    return len(published)


async def run_relay(store: OutboxStore, publisher: EmailPublisher, poll_seconds: float) -> None:
    """Relay forever: drain while there is work, then wait `poll_seconds`."""
    while True:
        try:
            while await relay_once(store, publisher) == BATCH_SIZE:
                pass
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("outbox.relay_error", error=str(error))
        await asyncio.sleep(poll_seconds)


async def measure_backlog(store: StrandedEmails) -> OutboxBacklog:
    """Refresh the outbox gauges (once per reconciler round, not per scrape)."""
    backlog = await store.outbox_backlog()
    OUTBOX_DEPTH.set(backlog.depth)
    OUTBOX_OLDEST_AGE.set(backlog.oldest_age_seconds)
    return backlog


async def reconcile_once(store: StrandedEmails, after_seconds: float, limit: int) -> int:
    """One round of the reconciler; the relay publishes what it put back in the outbox."""
    republished = await store.republish_stranded(after_seconds, limit)
    if republished:
        EMAILS_REPUBLISHED.inc(len(republished))
        log.warning(
            "outbox.republished",
            count=len(republished),
            email_ids=[str(email_id) for email_id in republished],
            stranded_after_seconds=after_seconds,
        )
    return len(republished)


async def run_reconciler(
    store: StrandedEmails, after_seconds: float, check_seconds: float, limit: int = 500
) -> None:
    """Forever: put emails whose queue message was lost back in the outbox (a queue purged
    or re-created, messages past retention, a message deleted before its outcome)."""
    while True:
        try:
            while await reconcile_once(store, after_seconds, limit) == limit:
                pass
            # The same housekeeping round: idempotency keys past their 24 h, and the gauges.
            await store.forget_expired_keys()
            await measure_backlog(store)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("outbox.reconcile_error", error=str(error))
        await asyncio.sleep(check_seconds)
