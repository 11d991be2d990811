"""The database itself keeps email_history append-only, except for rows past retention."""

import uuid

import pytest
from sqlalchemy import create_engine, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from mailstack_core.database import normalize_database_url
from mailstack_core.status import EmailStatus
from mailstack_core.tables import email_history, emails, tenants

pytestmark = pytest.mark.integration

TENANT = "tests"


@pytest.fixture
def engine(database_url: str) -> Engine:
    engine = create_engine(normalize_database_url(database_url))
    yield engine  # type: ignore[misc]
    engine.dispose()


def _email_with_history(engine: Engine, *, history_age_days: int = 0) -> uuid.UUID:
    email_id = uuid.uuid4()
    with engine.begin() as connection:
        connection.execute(pg_insert(tenants).values(id=TENANT).on_conflict_do_nothing())
        connection.execute(
            insert(emails).values(
                id=email_id,
                tenant_id=TENANT,
                sender_email="app@example.com",
                to_recipients=[{"email": "user@example.com"}],
                subject="Hello",
                text_body="Hi",
                status=EmailStatus.QUEUED,
                request_body="{}",
            )
        )
        connection.execute(
            insert(email_history).values(
                email_id=email_id,
                status=EmailStatus.QUEUED,
                at=text(f"now() - interval '{history_age_days} days'"),
            )
        )
    return email_id


def test_refuses_update_of_a_history_row(engine: Engine) -> None:
    email_id = _email_with_history(engine)
    with pytest.raises(DBAPIError, match="append-only: UPDATE"), engine.begin() as connection:
        connection.execute(
            update(email_history)
            .where(email_history.c.email_id == email_id)
            .values(status=EmailStatus.SENT)
        )
    with engine.connect() as connection:
        status = connection.scalar(
            select(email_history.c.status).where(email_history.c.email_id == email_id)
        )
    assert status == EmailStatus.QUEUED


def test_refuses_delete_of_a_history_row_inside_the_retention_window(engine: Engine) -> None:
    email_id = _email_with_history(engine, history_age_days=182)
    with pytest.raises(DBAPIError, match="retention window"), engine.begin() as connection:
        connection.execute(email_history.delete().where(email_history.c.email_id == email_id))
    with engine.connect() as connection:
        count = connection.scalar(
            select(email_history.c.id).where(email_history.c.email_id == email_id)
        )
    assert count is not None


def test_refuses_deleting_an_email_whose_history_is_recent(engine: Engine) -> None:
    email_id = _email_with_history(engine)
    with pytest.raises(DBAPIError, match="retention window"), engine.begin() as connection:
        connection.execute(emails.delete().where(emails.c.id == email_id))


def test_allows_delete_of_history_past_the_retention_window(engine: Engine) -> None:
    email_id = _email_with_history(engine, history_age_days=200)
    with engine.begin() as connection:
        deleted = connection.execute(
            email_history.delete().where(email_history.c.email_id == email_id)
        ).rowcount
    assert deleted == 1


def test_retention_window_follows_the_policy_row(engine: Engine) -> None:
    email_id = _email_with_history(engine, history_age_days=40)
    with engine.begin() as connection:
        connection.execute(text("UPDATE retention_policy SET history_retention_days = 30"))
    with engine.begin() as connection:
        deleted = connection.execute(
            email_history.delete().where(email_history.c.email_id == email_id)
        ).rowcount
    assert deleted == 1


def test_refuses_truncate_of_history(engine: Engine) -> None:
    _email_with_history(engine)
    with pytest.raises(DBAPIError, match="TRUNCATE refused"), engine.begin() as connection:
        connection.execute(text("TRUNCATE email_history"))
