"""Choosing the stack's Postgres, and creating and dropping databases on a real server."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from mailstack_core.migrate import database_revisions
from mailstack_core.schema import schema_is_current
from mailstack_stack import postgres
from mailstack_stack.config import Ports, StackConfig, free_port
from mailstack_stack.stack import Stack
from mailstack_testing.databases import database_name, drop_database

pytestmark = pytest.mark.integration


@pytest.fixture
def dbname(postgres_admin_url: str) -> Iterator[str]:
    name = f"mailstack_test_sel_{uuid.uuid4().hex[:10]}"
    yield name
    drop_database(postgres_admin_url, name)


@pytest.fixture
def cluster_root() -> Iterator[Path]:
    # The server runs as the postgres user, which cannot enter pytest's root-only tmp dir.
    root = Path(tempfile.mkdtemp(prefix="mailstack-test-pg-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_urls_are_converted_between_libpq_and_sqlalchemy_forms() -> None:
    url = "postgresql+psycopg://u:p@h:5/db?sslmode=disable"
    assert postgres.libpq_url(url) == "postgresql://u:p@h:5/db?sslmode=disable"
    assert postgres.sqlalchemy_url("postgresql://u@h:5/db") == "postgresql+psycopg://u@h:5/db"
    assert postgres.with_database("postgresql://u@h:5/postgres", "other") == (
        "postgresql://u@h:5/other"
    )
    assert database_name("postgresql+psycopg://u@h:5/mine") == "mine"


def test_a_database_of_our_own_is_created_once_and_handed_on_in_sqlalchemy_form(
    postgres_admin_url: str, dbname: str
) -> None:
    url = postgres.ensure_database(postgres_admin_url, dbname)
    assert postgres.ensure_database(postgres_admin_url, dbname) == url
    assert url.startswith("postgresql+psycopg://")
    assert database_name(url) == dbname
    with psycopg.connect(postgres.libpq_url(url)) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (dbname,)


def test_without_a_server_a_supervised_private_cluster_is_started_stopped_and_started(
    repo_root: Path, cluster_root: Path
) -> None:
    config = StackConfig(
        repo_root=repo_root,
        state_dir=cluster_root,
        ports=Ports(private_postgres=free_port()),
        postgres_probe_url=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        aws_endpoint_url="http://127.0.0.1:9",  # never reached: the test stops before
        die_with_parent=True,
    )
    stack = Stack(config)
    try:
        stack.start("postgres")
        assert stack.pid("postgres") is not None
        url = postgres.ensure_database(stack.cluster_url, "mailstack")
        with psycopg.connect(postgres.libpq_url(url)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert stack.stop("postgres")
        assert not postgres.server_answers(stack.cluster_url)
        stack.start("postgres")
        assert postgres.ensure_database(stack.cluster_url, "mailstack") == url
        assert ("postgres", stack.pid("postgres"), True) in stack.status()
    finally:
        assert "postgres" in stack.down()
    assert not postgres.server_answers(stack.cluster_url)


def test_drop_disconnects_sessions_still_using_the_database(
    postgres_admin_url: str, dbname: str
) -> None:
    url = postgres.ensure_database(postgres_admin_url, dbname)
    lingering = psycopg.connect(postgres.libpq_url(url))
    try:
        drop_database(postgres_admin_url, dbname)
        with psycopg.connect(postgres_admin_url) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            assert found.fetchone() is None
    finally:
        lingering.close()


def test_database_url_fixture_is_migrated_and_private(
    database_url: str, migrated_template: str, postgres_admin_url: str
) -> None:
    name = database_name(database_url)
    assert name != migrated_template
    with psycopg.connect(postgres.libpq_url(database_url)) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables")}
    assert {"alembic_version", "emails", "email_history"} <= tables


def test_a_new_database_is_migrated_and_one_at_head_starts_no_migration(
    postgres_admin_url: str, dbname: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres.ensure_database(postgres_admin_url, dbname)
    log_file = tmp_path / "migrate.log"
    with postgres.migrating(url, log_file):
        pass
    assert schema_is_current(database_revisions(url)), log_file.read_text()

    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a migration process started: {args}")

    monkeypatch.setattr(postgres.subprocess, "Popen", no_process)
    with postgres.migrating(url, log_file):
        pass
