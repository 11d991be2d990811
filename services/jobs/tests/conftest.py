"""Fixtures of the jobs' tests: a real database with aged rows, LocalStack credentials, S3 reads."""

import gzip
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Engine, create_engine, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.pool import NullPool

from mailstack_core.database import normalize_database_url
from mailstack_core.status import EmailStatus
from mailstack_core.tables import email_history, email_outbox, emails, retention_policy, tenants
from mailstack_testing.aws import localstack_clients

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sqs.client import SQSClient

REGION = "us-east-1"
History = list[tuple[EmailStatus, dict[str, Any], timedelta]]

TENANT = "tests"


@pytest.fixture(autouse=True)
def _localstack_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """LocalStack accepts any credentials, but boto3 needs some."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@dataclass
class EmailRows:
    """Writes emails with chosen ages straight into the database, and reads them back."""

    engine: Engine

    @staticmethod
    def request_body_of(email_id: uuid.UUID) -> str:
        """The request as the client sent it, kept byte for byte, non-ASCII included."""
        return f'{{"subject": "subject {email_id}", "ünï": "cødé"}}'

    def add(
        self,
        age: timedelta,
        *,
        status: EmailStatus = EmailStatus.SENT,
        updated_age: timedelta | None = None,
        history: History | None = None,
        outbox: bool = False,
        created_at: datetime | None = None,
    ) -> uuid.UUID:
        """An email created `age` ago; its history rows are (status, detail, age)."""
        email_id = uuid.uuid4()
        now = datetime.now(UTC)
        created = created_at if created_at is not None else now - age
        updated = now - updated_age if updated_age is not None else created
        if history is None:
            history = [
                (EmailStatus.QUEUED, {"outcome": "accepted"}, now - created),
                (EmailStatus.SENT, {"outcome": "accepted"}, now - updated),
            ]
        with self.engine.begin() as connection:
            connection.execute(pg_insert(tenants).values(id=TENANT).on_conflict_do_nothing())
            connection.execute(
                insert(emails).values(
                    id=email_id,
                    tenant_id=TENANT,
                    sender_email="sender@example.com",
                    sender_name="Sender",
                    to_recipients=[{"email": "to@example.com", "name": "To"}],
                    reply_to={"email": "reply@example.com"},
                    subject=f"subject {email_id}",
                    text_body="hello",
                    status=status,
                    request_body=self.request_body_of(email_id),
                    attempts=1,
                    created_at=created,
                    updated_at=updated,
                )
            )
            for entry_status, detail, entry_age in history:
                connection.execute(
                    insert(email_history).values(
                        email_id=email_id, status=entry_status, detail=detail, at=now - entry_age
                    )
                )
            if outbox:
                connection.execute(insert(email_outbox).values(email_id=email_id))
        return email_id

    def ids(self) -> set[uuid.UUID]:
        with self.engine.connect() as connection:
            return set(connection.scalars(select(emails.c.id)))

    def status(self, email_id: uuid.UUID) -> EmailStatus:
        with self.engine.connect() as connection:
            value = connection.scalar(select(emails.c.status).where(emails.c.id == email_id))
        return EmailStatus(str(value))

    def history(self, email_id: uuid.UUID) -> list[Any]:
        with self.engine.connect() as connection:
            return list(
                connection.execute(
                    select(email_history)
                    .where(email_history.c.email_id == email_id)
                    .order_by(email_history.c.id)
                )
            )

    def history_count(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(email_history)) or 0)

    def outbox_ids(self) -> set[uuid.UUID]:
        with self.engine.connect() as connection:
            return set(connection.scalars(select(email_outbox.c.email_id)))

    def set_history_retention_days(self, days: int) -> None:
        with self.engine.begin() as connection:
            connection.execute(update(retention_policy).values(history_retention_days=days))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(normalize_database_url(database_url), poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def rows(engine: Engine) -> EmailRows:
    return EmailRows(engine)


@pytest.fixture
def s3(localstack_endpoint: str) -> "S3Client":
    return localstack_clients(localstack_endpoint, REGION)[1]


@pytest.fixture
def sqs(localstack_endpoint: str) -> "SQSClient":
    return localstack_clients(localstack_endpoint, REGION)[0]


@pytest.fixture
def archive_bucket(s3: "S3Client") -> Iterator[str]:
    """A bucket of this test only, emptied and deleted afterwards."""
    name = f"mailstack-test-archive-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
        for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            s3.delete_object(Bucket=name, Key=item["Key"], VersionId=item["VersionId"])
    s3.delete_bucket(Bucket=name)


@dataclass(frozen=True)
class ArchivedObject:
    key: str
    lines: list[dict[str, Any]]

    @property
    def email_ids(self) -> list[uuid.UUID]:
        return [uuid.UUID(line["id"]) for line in self.lines]


def read_archive(s3: "S3Client", bucket: str) -> list[ArchivedObject]:
    """Every object in the bucket, gunzipped and parsed line by line."""
    objects = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            raw = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            text = gzip.decompress(raw).decode()
            lines = [json.loads(line) for line in text.splitlines()]
            objects.append(ArchivedObject(item["Key"], lines))
    return sorted(objects, key=lambda obj: obj.key)


@pytest.fixture
def archived(s3: "S3Client", archive_bucket: str) -> Any:
    """`archived()` reads back what the bucket holds now."""
    return lambda: read_archive(s3, archive_bucket)
