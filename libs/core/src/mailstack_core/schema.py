"""Which schema revisions this code serves, without importing Alembic.

The gateway's readiness check (`/healthz?deep=1`, the load balancer's) compares the database's
revision with this code's. Alembic would cost every gateway about 5 MB of resident memory for
that one comparison, so the revisions are read from the migration files' names: each file is
named after the revision it holds (`0011_provider_events.py` holds "0011"), in order. A test
holds this against Alembic's own view of the scripts.
"""

from collections.abc import Iterable
from functools import cache
from importlib.resources import files

from sqlalchemy import Connection, text

# Alembic's own bookkeeping: the app user reads it (readiness checks), never writes it.
VERSION_TABLE = "alembic_version"
_HAS_VERSION_TABLE = text(f"SELECT to_regclass('{VERSION_TABLE}') IS NOT NULL")
_CURRENT_REVISIONS = text(f"SELECT version_num FROM {VERSION_TABLE}")


def current_revisions(connection: Connection) -> tuple[str, ...]:
    """The revisions the database is at (none before the first migration: no table yet)."""
    if not connection.execute(_HAS_VERSION_TABLE).scalar_one():
        return ()
    return tuple(connection.execute(_CURRENT_REVISIONS).scalars())


@cache
def known_revisions() -> tuple[str, frozenset[str]]:
    """(the head, every revision) of the migrations shipped with this code."""
    versions = files("mailstack_core") / "migrations" / "versions"
    revisions = frozenset(
        entry.name.split("_", 1)[0]
        for entry in versions.iterdir()
        if entry.name[:1].isdigit() and entry.name.endswith(".py")
    )
    return max(revisions), revisions


def is_ahead(revisions: Iterable[str]) -> bool:
    """Whether a database at `revisions` was migrated by a newer release than this code."""
    found = set(revisions)
    return bool(found) and not found <= known_revisions()[1]


def schema_is_current(revisions: Iterable[str]) -> bool:
    """Whether a database at `revisions` serves this code: at its head, or at a revision this
    code does not know (a newer one, migrated for the next release; its migrations only add)."""
    found = set(revisions)
    return known_revisions()[0] in found or is_ahead(found)
