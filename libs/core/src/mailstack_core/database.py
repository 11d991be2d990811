"""Database URL handling and connection checks shared by every component that connects to
Postgres."""

import select
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError

if TYPE_CHECKING:  # not at run time: the jobs' Lambda bundle has no greenlet for the async layer
    from sqlalchemy.ext.asyncio import AsyncEngine

DRIVER = "postgresql+psycopg"


def normalize_database_url(url: str) -> URL:
    """Accept postgres://, postgresql:// or postgresql+psycopg:// and always use psycopg 3."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string(hide_password=True)}")
    return parsed.set(drivername=DRIVER)


def libpq_conninfo(url: str) -> str:
    """The URL as libpq (plain psycopg) takes it: `postgresql://`, without a driver suffix."""
    return (
        normalize_database_url(url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


def closed_by_server(fileno: int) -> bool:
    """Whether an idle connection's socket has something to read, without a round trip: an idle
    connection has nothing, unless the server closed it (a restart, a terminated backend: it
    sends its FATAL, then EOF)."""
    readable, _, _ = select.select([fileno], [], [], 0)
    return bool(readable)


def check_on_checkout(engine: "AsyncEngine") -> "AsyncEngine":
    """Have the engine's pool replace a connection the server closed while it was idle before
    handing it out (SQLAlchemy's pessimistic disconnect handling, by a `checkout` event raising
    DisconnectionError), instead of `pool_pre_ping`'s round trip on every checkout."""

    def check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        connection = dbapi_connection.driver_connection
        if connection.closed or closed_by_server(connection.fileno()):
            raise DisconnectionError("the server closed the connection")

    event.listen(engine.sync_engine.pool, "checkout", check)
    return engine
