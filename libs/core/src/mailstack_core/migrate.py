"""Run the Alembic migrations: `python -m mailstack_core.migrate --database-url URL`.

With `--app-database-url` (or APP_DATABASE_URL) it then creates the user that URL names, or
sets its password, with the rights the services need on the data and nothing more: the
deployed services never connect as the master user that owns the schema.
"""

import argparse
import os
import sys
from functools import cache
from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy import create_engine, text

from mailstack_core.database import normalize_database_url
from mailstack_core.schema import VERSION_TABLE, current_revisions, is_ahead


def _scripts_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("mailstack_core") / "migrations"))
    return config


def alembic_config(database_url: str) -> Config:
    config = _scripts_config()
    url = normalize_database_url(database_url).render_as_string(hide_password=False)
    # ConfigParser interpolation would choke on a literal % in a password.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


@cache
def alembic_revisions() -> tuple[str, frozenset[str]]:
    """(the head, every revision) as Alembic reads the scripts; `schema.known_revisions` reads
    the same from the file names without importing Alembic (a test holds them equal)."""
    scripts = ScriptDirectory.from_config(_scripts_config())
    head = scripts.get_current_head()
    assert head is not None, "the migrations have one head"
    return head, frozenset(revision.revision for revision in scripts.walk_revisions())


def database_revisions(database_url: str) -> tuple[str, ...]:
    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.connect() as connection:
            return current_revisions(connection)
    finally:
        engine.dispose()


def ensure_app_user(database_url: str, app_database_url: str) -> None:
    """Create the user `app_database_url` names (or set its password): it may connect, read
    and write every table's rows and use the sequences, and create or alter nothing."""
    app = normalize_database_url(app_database_url)
    if not app.username or not app.password:
        raise ValueError("the app database URL must name a user and a password")
    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.begin() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_roles WHERE rolname = :name"), {"name": app.username}
            ).scalar()
            database = connection.execute(text("SELECT current_database()")).scalar_one()
            user = sql.Identifier(app.username)
            statements = [
                sql.SQL("{} ROLE {} WITH LOGIN PASSWORD {}").format(
                    sql.SQL("ALTER" if exists else "CREATE"), user, sql.Literal(app.password)
                ),
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(database), user
                ),
                sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(user),
                sql.SQL(
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}"
                ).format(user),
                sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(user),
                sql.SQL("REVOKE INSERT, UPDATE, DELETE ON {} FROM {}").format(
                    sql.Identifier(VERSION_TABLE), user
                ),
                # Tables a later migration creates are the app's too, without another grant.
                sql.SQL(
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {}"
                ).format(user),
                sql.SQL(
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
                    "GRANT USAGE, SELECT ON SEQUENCES TO {}"
                ).format(user),
            ]
            # Straight to psycopg, in this transaction: with no parameters it sends the text
            # as it is, so a % in the password is not taken for a placeholder.
            driver = connection.connection.driver_connection
            assert driver is not None
            for statement in statements:
                driver.execute(statement)
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Migrate the mailstack database.")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL URL of a user that owns the schema (default: $DATABASE_URL)",
    )
    parser.add_argument(
        "--app-database-url",
        default=os.environ.get("APP_DATABASE_URL"),
        help="then create the user this URL names, with DML rights only ($APP_DATABASE_URL)",
    )
    parser.add_argument("revision", nargs="?", default="head")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("no database: pass --database-url or set DATABASE_URL")
    revisions = database_revisions(args.database_url)
    if args.revision == "head" and is_ahead(revisions):
        # A rollback to an earlier release: the schema it finds is newer, and compatible
        # (migrations only add), so there is nothing to do but keep the app user current.
        sys.stdout.write(f"the database is at {', '.join(revisions)}, ahead of this code\n")
    else:
        upgrade(args.database_url, args.revision)
    if args.app_database_url:
        ensure_app_user(args.database_url, args.app_database_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
