"""The outbox relay: publishes accepted emails that the inline publish did not queue."""

import asyncio
import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

BATCH_SIZE = 10  # the SQS batch limit


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


class EmailPublisher(Protocol):
    async def publish(self, email_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Publish one message per id; return the ids that could not be published."""


async def publish_now(
    email_ids: Sequence[uuid.UUID], store: OutboxStore, publisher: EmailPublisher
) -> None:
    """Publish right after acceptance. The rows stay locked while publishing, so the relay
    never publishes the same email at the same time; whatever fails here is left to it."""
    try:
        async with store.claim_ids(email_ids) as batch:
            await _publish_batch(batch, publisher)
    except Exception as error:  # the outbox rows remain; the relay publishes them later
        log.warning(
            "outbox.publish_now_failed", email_ids=[str(i) for i in email_ids], error=str(error)
        )


async def relay_once(store: OutboxStore, publisher: EmailPublisher) -> int:
    """Publish one batch of due outbox rows; return how many were published."""
    async with store.claim_due(BATCH_SIZE) as batch:
        return await _publish_batch(batch, publisher)


async def _publish_batch(batch: DueBatch, publisher: EmailPublisher) -> int:
    if not batch.email_ids:
        return 0
    try:
        failed = await publisher.publish(batch.email_ids)
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
