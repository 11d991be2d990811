"""The database guards the transitions of SCHEDULED and CANCELED, whoever writes the status."""

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from mailstack_core.database import normalize_database_url
from mailstack_core.status import EmailStatus
from mailstack_core.tables import email_history, emails, tenants

pytestmark = pytest.mark.integration

TENANT = "tests"
S, Q, P, SENT, F, C = (
    EmailStatus.SCHEDULED,
    EmailStatus.QUEUED,
    EmailStatus.PROCESSING,
    EmailStatus.SENT,
    EmailStatus.FAILED,
    EmailStatus.CANCELED,
)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(normalize_database_url(database_url))
    yield engine
    engine.dispose()


# Every column an email needs but its id and status.
EMAIL = {
    "tenant_id": TENANT,
    "sender_email": "app@example.com",
    "to_recipients": [{"email": "user@example.com"}],
    "subject": "Hello",
    "text_body": "Hi",
    "request_body": "{}",
}


def _email(engine: Engine, status: EmailStatus) -> uuid.UUID:
    email_id = uuid.uuid4()
    with engine.begin() as connection:
        connection.execute(pg_insert(tenants).values(id=TENANT).on_conflict_do_nothing())
        connection.execute(insert(emails).values(id=email_id, status=status, **EMAIL))
    return email_id


def _move(engine: Engine, email_id: uuid.UUID, status: EmailStatus) -> None:
    with engine.begin() as connection:
        connection.execute(update(emails).where(emails.c.id == email_id).values(status=status))


def _status(engine: Engine, email_id: uuid.UUID) -> str | None:
    with engine.connect() as connection:
        return connection.scalar(select(emails.c.status).where(emails.c.id == email_id))


@pytest.mark.parametrize(("before", "after"), [(S, Q), (S, C), (Q, C), (Q, P), (P, SENT), (F, Q)])
def test_allows_the_transitions_the_services_make(
    engine: Engine, before: EmailStatus, after: EmailStatus
) -> None:
    email_id = _email(engine, before)
    _move(engine, email_id, after)
    assert _status(engine, email_id) == after


@pytest.mark.parametrize(
    ("before", "after"),
    [(S, P), (S, SENT), (S, F), (C, Q), (C, P), (C, SENT), (C, S), (Q, S), (P, C), (SENT, C)],
)
def test_refuses_to_send_a_canceled_or_scheduled_email_or_cancel_a_claimed_one(
    engine: Engine, before: EmailStatus, after: EmailStatus
) -> None:
    email_id = _email(engine, before)
    with pytest.raises(DBAPIError, match=f"{before.value} -> {after.value} refused"):
        _move(engine, email_id, after)
    assert _status(engine, email_id) == before


def test_the_history_accepts_the_new_statuses(engine: Engine) -> None:
    email_id = _email(engine, S)
    with engine.begin() as connection:
        for status in (S, Q, C):
            connection.execute(insert(email_history).values(email_id=email_id, status=status))
    with engine.connect() as connection:
        stored = connection.scalars(
            select(email_history.c.status)
            .where(email_history.c.email_id == email_id)
            .order_by(email_history.c.id)
        )
        assert list(stored) == ["SCHEDULED", "QUEUED", "CANCELED"]
