"""Postgres for the stack: URLs, our databases on a server, migrations, a private cluster."""

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from sqlalchemy.exc import SQLAlchemyError

from mailstack_core.migrate import database_revisions
from mailstack_core.schema import schema_is_current


class PostgresError(RuntimeError):
    """A Postgres server could not be found, started, migrated or used."""


def libpq_url(url: str) -> str:
    """The URL as psycopg/libpq takes it (`postgresql://`), whatever driver suffix it had."""
    return urlsplit(url)._replace(scheme="postgresql").geturl()


def sqlalchemy_url(url: str) -> str:
    """The URL in the form handed to the services: `postgresql+psycopg://...`."""
    return urlsplit(url)._replace(scheme="postgresql+psycopg").geturl()


def with_database(url: str, dbname: str) -> str:
    return urlsplit(url)._replace(path=f"/{dbname}").geturl()


def server_answers(url: str) -> bool:
    """Whether a Postgres server accepts a connection at `url`."""
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def ensure_database(admin_url: str, name: str) -> str:
    """Create database `name` unless it exists; its URL (SQLAlchemy form) on that server."""
    # Another run may create it at the same moment: then it exists, which is all we need.
    exists = (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation)
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as db, contextlib.suppress(*exists):
        db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return sqlalchemy_url(with_database(admin_url, name))


def _at_head(database_url: str) -> bool:
    try:
        return schema_is_current(database_revisions(database_url))
    except SQLAlchemyError:
        return False  # the migration says what is wrong, in its log


@contextlib.contextmanager
def migrating(database_url: str, log_file: Path, python: str = sys.executable) -> Iterator[None]:
    """Bring the database to the latest schema (`python -m mailstack_core.migrate`) while the
    block runs; done, or raises, when the block ends. A database already at this code's head
    (a test's clone of a migrated template, a second `make up`) starts no migration process."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    if _at_head(database_url):
        yield
        return
    argv = [python, "-m", "mailstack_core.migrate", "--database-url", database_url]
    with log_file.open("a") as log, subprocess.Popen(argv, stdout=log, stderr=log) as migration:
        try:
            yield
        finally:
            code = migration.wait()
    if code:
        raise PostgresError(f"migrations failed; see {log_file}")


def bin_dir() -> Path:
    """The directory holding initdb and postgres (pg_config's answer, else the PATH's)."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if (Path(found.stdout.strip()) / "initdb").exists():
            return Path(found.stdout.strip())
    if (initdb := shutil.which("initdb")) is None:
        raise PostgresError("initdb not found: install PostgreSQL's server package")
    return Path(initdb).parent


def server_user() -> str | None:
    """initdb and postgres refuse to run as root: they run as the `postgres` user then."""
    return "postgres" if os.geteuid() == 0 else None


def init_cluster(data_dir: Path) -> None:
    """initdb (trust auth) into `data_dir`, unless done before."""
    if (data_dir / "PG_VERSION").exists():
        return
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    initdb = [str(bin_dir() / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust"]
    if user := server_user():
        shutil.chown(data_dir, user, user)
        initdb = ["runuser", "-u", user, "--", *initdb]
    done = subprocess.run([*initdb, "-EUTF8"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PostgresError(f"initdb failed in {data_dir}:\n{done.stderr}")


def server_argv(data_dir: Path, port: int) -> list[str]:
    """The server in the foreground on 127.0.0.1:`port`, TCP only."""
    settings = ("listen_addresses=127.0.0.1", f"port={port}", "unix_socket_directories=")
    return [str(bin_dir() / "postgres"), "-D", str(data_dir), *(f"-c{s}" for s in settings)]
