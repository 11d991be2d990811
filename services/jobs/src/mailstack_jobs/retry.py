"""The retry job: re-queue FAILED emails whose last failure was transient, in bounded rounds."""

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import structlog

from mailstack_jobs.bootstrap import run_job, sqs_client
from mailstack_jobs.queue import SqsEmailQueue
from mailstack_jobs.repository import EmailRetryStore, Exhausted, Requeued
from mailstack_jobs.settings import RetrySettings

log = structlog.get_logger(__name__)


class RetryStore(Protocol):
    def requeue_due(
        self, max_rounds: int, backoff_base_seconds: float, limit: int, outbox_grace_seconds: float
    ) -> list[Requeued]:
        """Commit QUEUED + history + outbox for a batch of emails whose backoff has passed."""

    def mark_exhausted(self, max_rounds: int, limit: int) -> list[Exhausted]: ...

    def forget_published(self, email_ids: Sequence[uuid.UUID]) -> None: ...


class EmailQueue(Protocol):
    def publish(self, email_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Return the ids that were not published."""


@dataclass(frozen=True)
class RetryPolicy:
    max_rounds: int = 3
    backoff_base_seconds: float = 900.0
    batch_size: int = 100
    outbox_grace_seconds: float = 60.0


@dataclass
class RetrySummary:
    requeued: int = 0
    published: int = 0
    # Durably queued in the outbox; the gateway's relay publishes them.
    left_in_outbox: int = 0
    exhausted: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Publisher:
    """Publishes after each commit; a failure leaves the outbox rows for the gateway's relay.

    Once the queue is unreachable, later batches of the run are left to the relay too, so an
    SQS outage costs one timeout, not one per batch.
    """

    def __init__(self, queue: EmailQueue, store: RetryStore) -> None:
        self._queue = queue
        self._store = store
        self._queue_down = False

    def publish(self, email_ids: Sequence[uuid.UUID]) -> int:
        if self._queue_down:
            return 0
        try:
            failed = self._queue.publish(email_ids)
            error = "refused by the queue"
        except Exception as exc:
            self._queue_down = True
            failed, error = set(email_ids), str(exc)
        published = [email_id for email_id in email_ids if email_id not in failed]
        self._store.forget_published(published)
        if failed:
            log.warning("retry.publish_failed", count=len(failed), error=error)
        return len(published)


def requeue_failed(store: RetryStore, queue: EmailQueue, policy: RetryPolicy) -> RetrySummary:
    """Give every transiently failed email whose backoff has passed another round."""
    summary = RetrySummary()
    publisher = _Publisher(queue, store)
    while exhausted := store.mark_exhausted(policy.max_rounds, policy.batch_size):
        summary.exhausted += len(exhausted)
        for given_up in exhausted:
            log.warning(
                "retry.rounds_exhausted",
                email_id=str(given_up.email_id),
                rounds=given_up.rounds,
                last_error=given_up.last_error,
            )
    while requeued := store.requeue_due(
        policy.max_rounds,
        policy.backoff_base_seconds,
        policy.batch_size,
        policy.outbox_grace_seconds,
    ):
        for item in requeued:
            log.info("retry.requeued", email_id=str(item.email_id), round=item.round)
        ids = [item.email_id for item in requeued]
        published = publisher.publish(ids)
        summary.requeued += len(ids)
        summary.published += published
        summary.left_in_outbox += len(ids) - published
        if len(requeued) < policy.batch_size:
            break
    log.info("retry.finished", **summary.as_dict())
    return summary


def handler(event: Mapping[str, Any] | None, context: Any) -> dict[str, Any]:
    """Lambda entry point (EventBridge schedule); the event carries nothing the job needs."""
    settings = RetrySettings()
    return run_job(
        settings,
        lambda engine: requeue_failed(
            EmailRetryStore(engine),
            SqsEmailQueue(sqs_client(settings), settings.email_queue_url),
            RetryPolicy(
                max_rounds=settings.retry_job_max_rounds,
                backoff_base_seconds=settings.retry_job_backoff_base_seconds,
                batch_size=settings.retry_job_batch_size,
                outbox_grace_seconds=settings.retry_job_outbox_grace_seconds,
            ),
        ),
    )
