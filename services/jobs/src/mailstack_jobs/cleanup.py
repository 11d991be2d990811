"""The retention job: archive emails past the retention window to S3, then delete them; then
delete the webhook events delivered or given up past their own (shorter) retention."""

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import IO, Any, Protocol

import structlog

from mailstack_jobs.archive import ArchiveFile, S3Archive
from mailstack_jobs.bootstrap import run_job, s3_client
from mailstack_jobs.repository import BatchKey, EmailCleanupStore, ExpiredEmail
from mailstack_jobs.settings import CleanupSettings

log = structlog.get_logger(__name__)


class ArchiveMismatchError(RuntimeError):
    """The archive in S3 does not hold exactly the emails this batch would delete."""


class DeleteMismatchError(RuntimeError):
    """The delete removed a different number of emails than were archived."""


class ExpiredBatch(Protocol):
    @property
    def email_ids(self) -> Sequence[uuid.UUID]: ...

    @property
    def last_key(self) -> BatchKey | None: ...

    def emails(self) -> Iterator[ExpiredEmail]: ...

    def delete(self, email_ids: Sequence[uuid.UUID]) -> int: ...


class CleanupStore(Protocol):
    def history_retention_days(self) -> int: ...

    def cutoff(self, retention_days: int) -> datetime: ...

    def claim_expired(
        self, cutoff: datetime, limit: int, after: BatchKey | None
    ) -> AbstractContextManager[ExpiredBatch]:
        """Lock a batch of expired emails for the life of the context; roll back on error."""

    def delete_finished_webhook_events(self, cutoff: datetime, limit: int) -> int:
        """Delete up to `limit` events delivered or given up before `cutoff`; how many."""


class Archive(Protocol):
    def put(self, key: str, body: IO[bytes], sha256: str) -> None: ...

    def stored_email_ids(self, key: str) -> list[uuid.UUID]: ...


@dataclass(frozen=True)
class CleanupPolicy:
    retention_days: int
    batch_size: int = 500
    # Stop starting batches when less than this many seconds are left (Lambda timeout).
    stop_margin_seconds: float = 60.0
    webhook_retention_days: int = 30


@dataclass
class CleanupSummary:
    retention_days: int
    cutoff: str
    batches: int = 0
    objects: int = 0
    archived: int = 0
    deleted: int = 0
    webhook_cutoff: str | None = None
    webhook_events_deleted: int = 0
    complete: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def effective_retention_days(configured: int, database_floor: int) -> int:
    """The history trigger refuses deletes inside the database's window, so it is a floor."""
    return max(configured, database_floor)


def _write_archive_files(emails: Iterator[ExpiredEmail]) -> list[ArchiveFile]:
    files: dict[date, ArchiveFile] = {}
    try:
        for email in emails:
            created = email.created_at.astimezone(UTC).date()
            if created not in files:
                files[created] = ArchiveFile(created)
            files[created].add(email.email_id, email.record)
        for archive_file in files.values():
            archive_file.finish()
    except BaseException:
        for archive_file in files.values():
            archive_file.close()
        raise
    return list(files.values())


def _archive_and_delete(batch: ExpiredBatch, archive: Archive) -> tuple[int, int]:
    """Upload the batch, read back what S3 holds, delete exactly those emails.

    Runs inside the batch's transaction: any failure rolls the delete back, and the emails stay
    in Postgres (possibly also in S3, where the next run overwrites the same key).
    """
    files = _write_archive_files(batch.emails())
    try:
        archived: list[uuid.UUID] = []
        for archive_file in files:
            archive.put(archive_file.key, archive_file.body, archive_file.sha256)
            stored = archive.stored_email_ids(archive_file.key)
            if sorted(stored) != sorted(archive_file.email_ids):
                raise ArchiveMismatchError(
                    f"{archive_file.key} holds {len(stored)} emails, "
                    f"{len(archive_file.email_ids)} were written"
                )
            archived += stored
            log.info("cleanup.archived", key=archive_file.key, count=len(stored))
    finally:
        for archive_file in files:
            archive_file.close()
    if sorted(archived) != sorted(batch.email_ids):
        raise ArchiveMismatchError(
            f"archived {len(archived)} emails of a batch of {len(batch.email_ids)}"
        )
    deleted = batch.delete(archived)
    if deleted != len(archived):
        raise DeleteMismatchError(f"deleted {deleted} emails, {len(archived)} were archived")
    return len(files), deleted


def clean_up(
    store: CleanupStore,
    archive: Archive,
    policy: CleanupPolicy,
    seconds_left: Callable[[], float] | None = None,
) -> CleanupSummary:
    """Archive, then delete, every email past the retention window, one batch at a time."""
    floor = store.history_retention_days()
    days = effective_retention_days(policy.retention_days, floor)
    if days != policy.retention_days:
        log.warning(
            "cleanup.retention_raised_to_database_floor",
            configured_days=policy.retention_days,
            database_days=floor,
        )
    cutoff = store.cutoff(days)
    summary = CleanupSummary(retention_days=days, cutoff=cutoff.isoformat())
    log.info("cleanup.started", retention_days=days, cutoff=summary.cutoff)
    after: BatchKey | None = None
    while True:
        if seconds_left is not None and seconds_left() < policy.stop_margin_seconds:
            summary.complete = False
            log.warning("cleanup.out_of_time", batches=summary.batches)
            break
        with store.claim_expired(cutoff, policy.batch_size, after) as batch:
            if not batch.email_ids:
                break
            objects, deleted = _archive_and_delete(batch, archive)
            after = batch.last_key
        summary.batches += 1
        summary.objects += objects
        summary.archived += deleted
        summary.deleted += deleted
        log.info("cleanup.batch_deleted", batch=summary.batches, deleted=deleted, objects=objects)
        if deleted < policy.batch_size:
            break
    if summary.complete:
        _delete_finished_webhook_events(store, policy, summary, seconds_left)
    log.info("cleanup.finished", **summary.as_dict())
    return summary


def _delete_finished_webhook_events(
    store: CleanupStore,
    policy: CleanupPolicy,
    summary: CleanupSummary,
    seconds_left: Callable[[], float] | None,
) -> None:
    """Delivered or given-up webhook events past their retention, a batch per transaction."""
    cutoff = store.cutoff(policy.webhook_retention_days)
    summary.webhook_cutoff = cutoff.isoformat()
    while True:
        if seconds_left is not None and seconds_left() < policy.stop_margin_seconds:
            summary.complete = False
            log.warning("cleanup.out_of_time", webhook_events=summary.webhook_events_deleted)
            return
        deleted = store.delete_finished_webhook_events(cutoff, policy.batch_size)
        summary.webhook_events_deleted += deleted
        if deleted:
            log.info("cleanup.webhook_events_deleted", deleted=deleted)
        if deleted < policy.batch_size:
            return


def _seconds_left(context: Any) -> Callable[[], float] | None:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return lambda: float(remaining()) / 1000.0


def handler(event: Mapping[str, Any] | None, context: Any) -> dict[str, Any]:
    """Lambda entry point (EventBridge schedule); the event carries nothing the job needs."""
    settings = CleanupSettings()
    return run_job(
        settings,
        lambda engine: clean_up(
            EmailCleanupStore(engine),
            S3Archive(s3_client(settings), settings.archive_bucket),
            CleanupPolicy(
                retention_days=settings.retention_days,
                batch_size=settings.cleanup_batch_size,
                stop_margin_seconds=settings.cleanup_stop_margin_seconds,
                webhook_retention_days=settings.webhook_event_retention_days,
            ),
            seconds_left=_seconds_left(context),
        ),
    )
