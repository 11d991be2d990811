"""The retention job against the real Postgres and LocalStack's S3."""

import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Engine, select

from mailstack_core.status import EmailStatus
from mailstack_core.tables import emails
from mailstack_jobs import cleanup
from mailstack_jobs.archive import S3Archive
from mailstack_jobs.cleanup import ArchiveMismatchError, CleanupPolicy, clean_up
from mailstack_jobs.repository import BatchKey, EmailCleanupStore, ExpiredEmail, LockedExpiredBatch

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

pytestmark = pytest.mark.integration

OLD = timedelta(days=200)
YOUNG = timedelta(days=10)
KEY = re.compile(r"^emails/created_date=(\d{4}-\d{2}-\d{2})/batch-[0-9a-f]{32}\.jsonl\.gz$")


@pytest.fixture
def store(engine: Engine) -> EmailCleanupStore:
    return EmailCleanupStore(engine)


@pytest.fixture
def archive(s3: "S3Client", archive_bucket: str) -> S3Archive:
    return S3Archive(s3, archive_bucket)


def test_archives_then_deletes_only_emails_past_the_retention_window(
    rows: Any, store: EmailCleanupStore, archive: S3Archive, archived: Any
) -> None:
    old = [rows.add(OLD, outbox=True) for _ in range(3)]
    young = rows.add(YOUNG)
    # Every history row is old, but the email row itself changed recently.
    recently_touched = rows.add(
        OLD, updated_age=YOUNG, history=[(EmailStatus.SENT, {"outcome": "accepted"}, OLD)]
    )
    # The email row is old, but one history row is inside the window: the trigger would refuse.
    recent_history = rows.add(
        OLD,
        history=[
            (EmailStatus.QUEUED, {"outcome": "accepted"}, OLD),
            (EmailStatus.SENT, {"outcome": "accepted"}, YOUNG),
        ],
    )
    history_before = {email_id: rows.history(email_id) for email_id in old}

    summary = clean_up(store, archive, CleanupPolicy(retention_days=183))

    assert rows.ids() == {young, recently_touched, recent_history}
    assert rows.outbox_ids() == set()
    assert rows.history_count() == 2 + 1 + 2
    assert (summary.deleted, summary.archived, summary.batches) == (3, 3, 1)
    assert summary.retention_days == 183
    [stored] = archived()
    match = KEY.match(stored.key)
    assert match is not None, stored.key
    assert match.group(1) == (datetime.now(UTC) - OLD).date().isoformat()
    assert sorted(stored.email_ids) == sorted(old)
    for line in stored.lines:
        email_id = uuid.UUID(line["id"])
        assert line["subject"] == f"subject {email_id}"
        assert line["status"] == "SENT"
        assert line["to_recipients"] == [{"email": "to@example.com", "name": "To"}]
        assert line["request_body"] == rows.request_body_of(email_id)
        assert datetime.fromisoformat(line["created_at"]) < datetime.now(UTC) - OLD
        assert {"sender_email", "provider", "attempts", "lease_expires_at"} <= line.keys()
        before = history_before[email_id]
        assert [entry["id"] for entry in line["history"]] == [entry.id for entry in before]
        assert [entry["status"] for entry in line["history"]] == ["QUEUED", "SENT"]
        assert line["history"][0]["detail"] == {"outcome": "accepted"}
        assert line["history"][0]["at"] == before[0].at.astimezone(UTC).isoformat()


def test_splits_work_into_batches_and_objects_by_creation_day(
    rows: Any, store: EmailCleanupStore, archive: S3Archive, archived: Any
) -> None:
    day_one = datetime.now(UTC).replace(hour=12) - timedelta(days=300)
    day_two = day_one + timedelta(days=1)
    created = [rows.add(OLD, created_at=day_one + timedelta(seconds=i)) for i in range(4)]
    created += [rows.add(OLD, created_at=day_two + timedelta(seconds=i)) for i in range(3)]

    summary = clean_up(store, archive, CleanupPolicy(retention_days=183, batch_size=3))

    assert rows.ids() == set()
    assert summary.batches == 3
    assert summary.deleted == 7
    objects = archived()
    # Batches [d1 d1 d1] [d1 d2 d2] [d2]: the middle batch spans two days, so two objects.
    assert len(objects) == summary.objects == 4
    all_ids = [email_id for obj in objects for email_id in obj.email_ids]
    assert sorted(all_ids) == sorted(created)
    for obj in objects:
        match = KEY.match(obj.key)
        assert match is not None, obj.key
        assert {line["created_at"][:10] for line in obj.lines} == {match.group(1)}
        assert len(obj.lines) <= 3


class CrashBeforeDeleteError(RuntimeError):
    pass


class _CrashingBatch:
    """The real locked batch, except that the process 'dies' when it is about to delete."""

    def __init__(self, inner: LockedExpiredBatch) -> None:
        self._inner = inner

    @property
    def email_ids(self) -> Sequence[uuid.UUID]:
        return self._inner.email_ids

    @property
    def last_key(self) -> BatchKey | None:
        return self._inner.last_key

    def emails(self) -> Iterator[ExpiredEmail]:
        return self._inner.emails()

    def delete(self, email_ids: Sequence[uuid.UUID]) -> int:
        self._inner.delete(email_ids)  # executed, then lost with the transaction
        raise CrashBeforeDeleteError("killed between archive and delete")


class CrashingStore:
    def __init__(self, inner: EmailCleanupStore) -> None:
        self._inner = inner

    def history_retention_days(self) -> int:
        return self._inner.history_retention_days()

    def cutoff(self, retention_days: int) -> datetime:
        return self._inner.cutoff(retention_days)

    @contextmanager
    def claim_expired(
        self, cutoff: datetime, limit: int, after: BatchKey | None
    ) -> Iterator[_CrashingBatch]:
        with self._inner.claim_expired(cutoff, limit, after) as batch:
            yield _CrashingBatch(batch)


def test_a_crash_between_archive_and_delete_loses_nothing_and_a_rerun_finishes(
    rows: Any, store: EmailCleanupStore, archive: S3Archive, archived: Any
) -> None:
    old = [rows.add(OLD) for _ in range(5)]
    young = rows.add(YOUNG)
    history_rows = rows.history_count()

    with pytest.raises(CrashBeforeDeleteError):
        clean_up(CrashingStore(store), archive, CleanupPolicy(retention_days=183))

    assert rows.ids() == {*old, young}
    assert rows.history_count() == history_rows
    [after_crash] = archived()
    assert sorted(after_crash.email_ids) == sorted(old)

    summary = clean_up(store, archive, CleanupPolicy(retention_days=183))

    assert rows.ids() == {young}
    assert summary.deleted == 5
    # The re-run archived the same emails under the same key: recognized, not duplicated.
    [after_rerun] = archived()
    assert after_rerun.key == after_crash.key
    assert sorted(after_rerun.email_ids) == sorted(old)


def test_never_deletes_inside_the_database_retention_window(
    rows: Any, store: EmailCleanupStore, archive: S3Archive, archived: Any
) -> None:
    rows.set_history_retention_days(300)
    inside_database_window = rows.add(OLD)
    past_both = rows.add(timedelta(days=320))

    summary = clean_up(store, archive, CleanupPolicy(retention_days=183))

    assert summary.retention_days == 300
    assert rows.ids() == {inside_database_window}
    assert [obj.email_ids for obj in archived()] == [[past_both]]


def test_a_longer_configured_retention_than_the_database_floor_is_kept(
    rows: Any, store: EmailCleanupStore, archive: S3Archive
) -> None:
    kept = rows.add(OLD)
    deleted = rows.add(timedelta(days=400))

    summary = clean_up(store, archive, CleanupPolicy(retention_days=365))

    assert summary.retention_days == 365
    assert rows.ids() == {kept}
    assert deleted not in rows.ids()


def test_a_rerun_with_nothing_to_do_changes_nothing(
    rows: Any, store: EmailCleanupStore, archive: S3Archive, archived: Any
) -> None:
    rows.add(OLD)
    young = rows.add(YOUNG)
    clean_up(store, archive, CleanupPolicy(retention_days=183))
    objects = archived()

    summary = clean_up(store, archive, CleanupPolicy(retention_days=183))

    assert (summary.batches, summary.objects, summary.deleted) == (0, 0, 0)
    assert summary.complete
    assert rows.ids() == {young}
    assert archived() == objects


def test_skips_emails_another_run_has_locked(
    rows: Any, engine: Engine, store: EmailCleanupStore, archive: S3Archive
) -> None:
    held = rows.add(OLD)
    free = rows.add(OLD)
    with engine.connect() as other_run:
        other_run.execute(select(emails.c.id).where(emails.c.id == held).with_for_update())
        summary = clean_up(store, archive, CleanupPolicy(retention_days=183))
        other_run.rollback()

    assert summary.deleted == 1
    assert rows.ids() == {held}
    assert free not in rows.ids()


class ShortArchive:
    """An archive whose stored object lost an email on the way."""

    def __init__(self, inner: S3Archive) -> None:
        self._inner = inner

    def put(self, key: str, body: Any, sha256: str) -> None:
        self._inner.put(key, body, sha256)

    def stored_email_ids(self, key: str) -> list[uuid.UUID]:
        return self._inner.stored_email_ids(key)[1:]


def test_deletes_nothing_when_the_stored_object_does_not_hold_every_email(
    rows: Any, store: EmailCleanupStore, archive: S3Archive
) -> None:
    old = {rows.add(OLD) for _ in range(2)}

    with pytest.raises(ArchiveMismatchError):
        clean_up(store, ShortArchive(archive), CleanupPolicy(retention_days=183))

    assert rows.ids() == old


def test_stops_starting_batches_when_the_lambda_is_about_to_time_out(
    rows: Any, store: EmailCleanupStore, archive: S3Archive
) -> None:
    old = {rows.add(OLD) for _ in range(4)}
    budget = iter([120.0, 30.0])

    summary = clean_up(
        store,
        archive,
        CleanupPolicy(retention_days=183, batch_size=2, stop_margin_seconds=60),
        seconds_left=lambda: next(budget),
    )

    assert not summary.complete
    assert summary.batches == 1
    assert len(old - rows.ids()) == 2


def test_the_lambda_handler_archives_and_deletes(
    rows: Any,
    database_url: str,
    localstack_endpoint: str,
    archive_bucket: str,
    archived: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = rows.add(OLD)
    young = rows.add(YOUNG)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("ARCHIVE_BUCKET", archive_bucket)
    monkeypatch.setenv("AWS_ENDPOINT_URL", localstack_endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("RETENTION_DAYS", "150")

    result = cleanup.handler({"source": "aws.events"}, None)

    assert result["deleted"] == 1
    assert result["retention_days"] == 183  # the database's floor beats RETENTION_DAYS=150
    assert result["complete"] is True
    assert rows.ids() == {young}
    assert [obj.email_ids for obj in archived()] == [[old]]


def test_keeps_a_scheduled_email_past_a_short_retention_and_archives_a_canceled_one(
    rows: Any, store: EmailCleanupStore, archive: S3Archive, archived: Any
) -> None:
    rows.set_history_retention_days(1)
    accepted = (EmailStatus.SCHEDULED, {"outcome": "accepted"}, timedelta(days=5))
    # Accepted five days ago for a send_at weeks ahead: not sent yet, so not to be deleted.
    scheduled = rows.add(timedelta(days=5), status=EmailStatus.SCHEDULED, history=[accepted])
    canceled = rows.add(
        timedelta(days=5),
        status=EmailStatus.CANCELED,
        updated_age=timedelta(days=4),
        history=[accepted, (EmailStatus.CANCELED, {"outcome": "canceled"}, timedelta(days=4))],
    )

    summary = clean_up(store, archive, CleanupPolicy(retention_days=1))

    assert rows.ids() == {scheduled}
    assert summary.deleted == 1
    [stored] = archived()
    assert stored.email_ids == [canceled]
