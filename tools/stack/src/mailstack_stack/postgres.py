"""Postgres for the stack: pick a server, create or drop our databases, a private cluster."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from mailstack_stack.supervision import Program

SQLALCHEMY_SCHEME = "postgresql+psycopg"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5432
DEFAULT_DATABASE = "mailstack"
SERVER_OS_USER = "postgres"


class PostgresError(RuntimeError):
    """A Postgres server could not be found, started or used."""


def with_scheme(url: str, scheme: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((scheme, *parts[1:]))


def libpq_url(url: str) -> str:
    """The URL as psycopg/libpq takes it (`postgresql://`), whatever driver suffix it had."""
    return with_scheme(url, "postgresql")


def sqlalchemy_url(url: str) -> str:
    """The URL in the form handed to the services: `postgresql+psycopg://...`."""
    return with_scheme(url, SQLALCHEMY_SCHEME)


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, parts.fragment))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def server_url(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, user: str = "postgres") -> str:
    """The admin URL (database `postgres`) of a trust-auth server."""
    return f"postgresql://{user}@{host}:{port}/postgres"


def server_answers(url: str, timeout: int = 2) -> bool:
    """Whether a Postgres server accepts a connection at `url`."""
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=timeout):
            return True
    except psycopg.Error:
        return False


def database_exists(admin_url: str, name: str) -> bool:
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        return row is not None


def create_database(admin_url: str, name: str, template: str | None = None) -> None:
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        conn.execute(statement)


def ensure_database(admin_url: str, name: str) -> str:
    """Create database `name` if missing; return its URL on the same server."""
    if not database_exists(admin_url, name):
        # Another run may create it at the same moment: then it exists, which is all we need.
        with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            create_database(admin_url, name)
    return with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """Drop `name` if it exists, disconnecting whoever is still connected to it."""
    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        conn.execute(statement)


def postgres_bin_dir() -> Path:
    """The directory holding initdb and postgres (pg_config's answer, else the PATH's)."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if (Path(found.stdout.strip()) / "initdb").exists():
            return Path(found.stdout.strip())
    initdb = shutil.which("initdb")
    if initdb is None:
        raise PostgresError("initdb not found: install PostgreSQL's server package")
    return Path(initdb).parent


def _server_user() -> str | None:
    """initdb and postgres refuse to run as root: they run as the `postgres` user then."""
    return SERVER_OS_USER if os.geteuid() == 0 else None


@dataclass(frozen=True)
class PrivateCluster:
    """A Postgres cluster of our own under `root` (data in `root/data`), trust auth, TCP only,
    run as a supervised program."""

    root: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def admin_url(self) -> str:
        return server_url(DEFAULT_HOST, self.port)

    def initialize(self) -> None:
        """initdb, unless done before."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        user = _server_user()
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        initdb = [str(postgres_bin_dir() / "initdb"), "-D", str(self.data_dir), "-U", "postgres"]
        initdb += ["--auth=trust", "--encoding=UTF8", "--no-instructions"]
        argv = ["runuser", "-u", user, "--", *initdb] if user else initdb
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PostgresError(f"initdb failed in {self.data_dir}:\n{result.stderr}")

    def program(self) -> Program:
        """The server in the foreground; SIGINT is Postgres's fast shutdown."""
        argv = [str(postgres_bin_dir() / "postgres"), "-D", str(self.data_dir)]
        for setting in (f"listen_addresses={DEFAULT_HOST}", f"port={self.port}"):
            argv += ["-c", setting]
        return Program(
            name="postgres",
            argv=[*argv, "-c", "unix_socket_directories="],
            stop_signal="INT",
            stop_grace=30,
            priority=1,
            user=_server_user(),
            # Its own postmaster.pid is in the data directory.
            write_pid=False,
        )


@dataclass(frozen=True)
class DatabaseChoice:
    """The database the stack uses, and where it came from."""

    url: str
    source: str


def select_database(
    explicit_url: str | None,
    probe_url: str | None,
    start_cluster: Callable[[], str],
    dbname: str = DEFAULT_DATABASE,
) -> DatabaseChoice:
    """`explicit_url` if given; else database `dbname` on the server at `probe_url` if it answers
    (None: look for none); else `dbname` on the private cluster `start_cluster` starts (it
    returns the admin URL). URLs are SQLAlchemy form."""
    if explicit_url:
        return DatabaseChoice(url=sqlalchemy_url(explicit_url), source="DATABASE_URL")
    if probe_url is not None and server_answers(probe_url):
        url = ensure_database(probe_url, dbname)
        return DatabaseChoice(url=sqlalchemy_url(url), source="server")
    url = ensure_database(start_cluster(), dbname)
    return DatabaseChoice(url=sqlalchemy_url(url), source="private cluster")
