"""Postgres for the stack: pick a server, create or drop our databases, run a private cluster."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

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
    """The directory holding initdb and pg_ctl (pg_config's answer, else the newest Debian one)."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        candidate = Path(result.stdout.strip())
        if result.returncode == 0 and (candidate / "initdb").exists():
            return candidate
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresError("initdb not found: install PostgreSQL's server package")


def _as_server_user(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the `postgres` user then."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", SERVER_OS_USER, "--", *argv]


def _give_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SERVER_OS_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass(frozen=True)
class PrivateCluster:
    """A Postgres cluster of our own under `root` (data in `root/data`), trust auth, TCP only."""

    root: Path
    port: int
    log_file: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def admin_url(self) -> str:
        return server_url(DEFAULT_HOST, self.port)

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = _as_server_user([str(postgres_bin_dir() / tool), *args])
        return subprocess.run(argv, capture_output=True, text=True, check=False)

    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def initialize(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        _give_to_server_user(self.data_dir)
        result = self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
        )
        if result.returncode != 0:
            raise PostgresError(f"initdb failed in {self.data_dir}:\n{result.stderr}")

    def is_running(self) -> bool:
        return (
            self.is_initialized()
            and self._run("pg_ctl", "status", "-D", str(self.data_dir)).returncode == 0
        )

    def start(self, timeout: int = 60) -> None:
        """Initialize if needed and start on 127.0.0.1:`port` (no Unix socket), unless running."""
        if not self.is_initialized():
            self.initialize()
        if self.is_running():
            return
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.touch()
        _give_to_server_user(self.log_file)
        options = (
            f"-c listen_addresses={DEFAULT_HOST} -c port={self.port} -c unix_socket_directories=''"
        )
        result = self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            str(timeout),
            "-o",
            options,
        )
        if result.returncode != 0:
            raise PostgresError(
                f"private Postgres did not start on port {self.port}: {result.stderr.strip()}; "
                f"see {self.log_file}"
            )

    def stop(self, timeout: int = 30) -> bool:
        """Stop the cluster (fast shutdown); False if it was not running."""
        if not self.is_running():
            return False
        result = self._run(
            "pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(timeout)
        )
        if result.returncode != 0:
            raise PostgresError(f"private Postgres did not stop: {result.stderr.strip()}")
        return True


@dataclass(frozen=True)
class DatabaseChoice:
    """The database the stack uses, and the private cluster serving it if we run one."""

    url: str
    source: str
    cluster: PrivateCluster | None = None


def select_database(
    explicit_url: str | None,
    probe_url: str | None,
    cluster: PrivateCluster,
    dbname: str = DEFAULT_DATABASE,
) -> DatabaseChoice:
    """`explicit_url` if given; else database `dbname` on the server at `probe_url` if it answers
    (None: look for none); else `dbname` on `cluster`, started (and initialized) on demand.
    URLs are SQLAlchemy form."""
    if explicit_url:
        return DatabaseChoice(url=sqlalchemy_url(explicit_url), source="DATABASE_URL")
    if probe_url is not None and server_answers(probe_url):
        url = ensure_database(probe_url, dbname)
        return DatabaseChoice(url=sqlalchemy_url(url), source="server")
    cluster.start()
    url = ensure_database(cluster.admin_url, dbname)
    return DatabaseChoice(url=sqlalchemy_url(url), source="private cluster", cluster=cluster)
