"""Database URL handling shared by every component that connects to Postgres."""

from sqlalchemy.engine import URL, make_url

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
