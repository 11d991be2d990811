"""The migration creates the services' own database user: rows yes, schema no; and tells
whether a database's schema serves this code."""

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from psycopg.errors import InsufficientPrivilege
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ProgrammingError

from mailstack_core.database import normalize_database_url
from mailstack_core.migrate import (
    downgrade,
    ensure_app_user,
    main,
)
from mailstack_core.schema import current_revisions, schema_is_current

pytestmark = pytest.mark.integration


@pytest.fixture
def app_url(database_url: str) -> Iterator[str]:
    """A URL for a user of this test alone (roles are shared by the whole server)."""
    user = f"app_{uuid.uuid4().hex[:12]}"
    url = normalize_database_url(database_url).set(username=user, password="s3cret%'pw")
    yield url.render_as_string(hide_password=False)
    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.begin() as connection:
            found = text("SELECT 1 FROM pg_roles WHERE rolname = :user")
            if connection.execute(found, {"user": user}).scalar():
                connection.exec_driver_sql(f'DROP OWNED BY "{user}"')
                connection.exec_driver_sql(f'DROP ROLE "{user}"')
    finally:
        engine.dispose()


def can(url: str | URL, statement: str) -> bool:
    engine = create_engine(normalize_database_url(str(url)) if isinstance(url, str) else url)
    try:
        with engine.begin() as connection:
            connection.execute(text(statement))
        return True
    except ProgrammingError as error:
        # Refused for want of a right; any other error is the test's own mistake.
        if isinstance(error.orig, InsufficientPrivilege):
            return False
        raise
    finally:
        engine.dispose()


def test_the_app_user_reads_and_writes_rows_but_changes_no_schema(
    database_url: str, app_url: str
) -> None:
    ensure_app_user(database_url, app_url)
    assert can(app_url, "SELECT count(*) FROM emails")
    assert can(app_url, "DELETE FROM email_outbox WHERE false")
    assert can(app_url, "UPDATE tenants SET id = id WHERE false")
    assert can(app_url, "SELECT version_num FROM alembic_version")
    assert not can(app_url, "UPDATE alembic_version SET version_num = version_num")
    assert not can(app_url, "CREATE TABLE intruder (id int)")
    assert not can(app_url, "ALTER TABLE emails ADD COLUMN intruder int")
    assert not can(app_url, "DROP TABLE email_history")


def test_running_it_again_sets_the_new_password(database_url: str, app_url: str) -> None:
    ensure_app_user(database_url, app_url)
    rotated = normalize_database_url(app_url).set(password="another-one")
    ensure_app_user(database_url, rotated.render_as_string(hide_password=False))
    assert can(rotated, "SELECT 1")


def test_the_command_line_migrates_then_creates_the_user_from_the_environment(
    database_url: str, app_url: str
) -> None:
    """What the ECS migration task runs: the URLs come from its secrets, as variables."""
    downgrade(database_url, "base")
    environment = {"DATABASE_URL": database_url, "APP_DATABASE_URL": app_url, "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-m", "mailstack_core.migrate"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert can(app_url, "SELECT count(*) FROM emails")


def test_the_schema_serves_this_code_at_its_head_or_a_newer_revision(database_url: str) -> None:
    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.connect() as connection:
            at_head = current_revisions(connection)
        assert schema_is_current(at_head)
        assert schema_is_current(["a-revision-of-the-next-release"])
        assert not schema_is_current([])
        downgrade(database_url, "0004")
        with engine.connect() as connection:
            assert current_revisions(connection) == ("0004",)
        assert not schema_is_current(["0004"])
    finally:
        engine.dispose()


def test_an_earlier_release_leaves_a_newer_schema_alone(database_url: str, app_url: str) -> None:
    """A rollback runs the previous image's migration task: it must not fail on a revision it
    does not know, or the rollback could not deploy."""
    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = 'from-the-future'"))
        assert main(["--database-url", database_url, "--app-database-url", app_url]) == 0
        with engine.connect() as connection:
            assert current_revisions(connection) == ("from-the-future",)
        assert can(app_url, "SELECT count(*) FROM emails")
    finally:
        engine.dispose()
