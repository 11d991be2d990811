"""The retention job's webhook rows, on the real Postgres: delivered or given-up events past
their retention go with their attempts, in batches; an email's events go with the email."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Engine, func, insert, select

from mailstack_core.tables import webhook_deliveries, webhook_endpoints, webhook_events
from mailstack_jobs.archive import S3Archive
from mailstack_jobs.cleanup import CleanupPolicy, clean_up
from mailstack_jobs.repository import EmailCleanupStore

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

pytestmark = pytest.mark.integration

TENANT = "tests"  # the tenant the `rows` fixture writes emails for
OLD_EMAIL = timedelta(days=200)
YOUNG_EMAIL = timedelta(days=10)
LONG_AGO = timedelta(days=40)
RECENTLY = timedelta(days=5)


@dataclass
class WebhookRows:
    engine: Engine
    endpoint_id: uuid.UUID

    def add(
        self,
        *,
        age: timedelta,
        email_id: uuid.UUID | None = None,
        delivered: timedelta | None = None,
        gave_up: timedelta | None = None,
        attempts: int = 1,
    ) -> str:
        """An event created `age` ago, delivered or given up that long ago (or waiting), with
        `attempts` rows in webhook_deliveries."""
        now = datetime.now(UTC)
        event_id = f"msg_{uuid.uuid4().hex}"
        with self.engine.begin() as connection:
            connection.execute(
                insert(webhook_events).values(
                    id=event_id,
                    endpoint_id=self.endpoint_id,
                    email_id=email_id,
                    type="email.sent",
                    payload={"type": "email.sent"},
                    created_at=now - age,
                    next_attempt_at=now - age,
                    attempts=attempts,
                    delivered_at=None if delivered is None else now - delivered,
                    gave_up_at=None if gave_up is None else now - gave_up,
                )
            )
            for _ in range(attempts):
                connection.execute(
                    insert(webhook_deliveries).values(
                        event_id=event_id,
                        endpoint_id=self.endpoint_id,
                        attempted_at=now - age,
                        status_code=500,
                        duration_ms=12,
                    )
                )
        return event_id

    def ids(self) -> set[str]:
        with self.engine.connect() as connection:
            return set(connection.scalars(select(webhook_events.c.id)))

    def deliveries_of(self) -> set[str]:
        with self.engine.connect() as connection:
            return set(connection.scalars(select(webhook_deliveries.c.event_id).distinct()))

    def delivery_count(self) -> int:
        with self.engine.connect() as connection:
            count = connection.scalar(select(func.count()).select_from(webhook_deliveries))
        return int(count or 0)


@pytest.fixture
def hooks(engine: Engine, rows: Any) -> WebhookRows:
    rows.add(YOUNG_EMAIL)  # makes the tenant
    endpoint_id = uuid.uuid4()
    with engine.begin() as connection:
        connection.execute(
            insert(webhook_endpoints).values(
                id=endpoint_id,
                tenant_id=TENANT,
                url="https://example.org/hook",
                events=["*"],
                secret="whsec_x",
                # Disabled: its waiting events wait however old they are.
                enabled=False,
                disabled_reason="no success for 3 days",
            )
        )
    return WebhookRows(engine, endpoint_id)


@pytest.fixture
def store(engine: Engine) -> EmailCleanupStore:
    return EmailCleanupStore(engine)


@pytest.fixture
def archive(s3: "S3Client", archive_bucket: str) -> S3Archive:
    return S3Archive(s3, archive_bucket)


def test_deletes_events_finished_before_the_retention_with_their_attempts_in_batches(
    hooks: WebhookRows, store: EmailCleanupStore, archive: S3Archive
) -> None:
    finished_long_ago = {hooks.add(age=LONG_AGO, delivered=LONG_AGO, attempts=2) for _ in range(3)}
    finished_long_ago.add(hooks.add(age=LONG_AGO, gave_up=LONG_AGO, attempts=3))
    kept = {
        hooks.add(age=LONG_AGO, delivered=RECENTLY),  # delivered late: younger than retention
        hooks.add(age=RECENTLY, gave_up=RECENTLY),
        hooks.add(age=LONG_AGO),  # waiting for its disabled endpoint
    }

    summary = clean_up(
        store, archive, CleanupPolicy(retention_days=183, batch_size=3, webhook_retention_days=30)
    )

    assert hooks.ids() == kept
    assert hooks.deliveries_of() == kept
    assert hooks.delivery_count() == 3
    assert summary.webhook_events_deleted == 4
    assert summary.complete
    assert summary.webhook_cutoff is not None
    cutoff = datetime.fromisoformat(summary.webhook_cutoff)
    assert abs(datetime.now(UTC) - timedelta(days=30) - cutoff) < timedelta(minutes=1)


def test_a_deleted_emails_events_go_with_it_and_others_stay(
    hooks: WebhookRows, rows: Any, store: EmailCleanupStore, archive: S3Archive
) -> None:
    old_email = rows.add(OLD_EMAIL)
    young_email = rows.add(YOUNG_EMAIL)
    of_old = {
        hooks.add(age=RECENTLY, email_id=old_email),  # still waiting
        hooks.add(age=RECENTLY, email_id=old_email, delivered=RECENTLY),
    }
    of_young = hooks.add(age=RECENTLY, email_id=young_email, delivered=RECENTLY)
    test_event = hooks.add(age=RECENTLY, delivered=RECENTLY)

    summary = clean_up(store, archive, CleanupPolicy(retention_days=183))

    assert summary.deleted == 1
    assert old_email not in rows.ids()
    assert hooks.ids() == {of_young, test_event}
    assert not of_old & hooks.deliveries_of()


def test_out_of_time_after_the_emails_leaves_the_events_for_the_next_run(
    hooks: WebhookRows, store: EmailCleanupStore, archive: S3Archive
) -> None:
    old = hooks.add(age=LONG_AGO, delivered=LONG_AGO)
    budget = iter([120.0, 30.0])  # enough for the (empty) email batch, not for the events

    summary = clean_up(
        store,
        archive,
        CleanupPolicy(retention_days=183, stop_margin_seconds=60),
        seconds_left=lambda: next(budget),
    )

    assert not summary.complete
    assert hooks.ids() == {old}
