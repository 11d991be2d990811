"""Run the Alembic migrations: `python -m mailstack_core.migrate --database-url URL`."""

import argparse
import os
import sys
from importlib.resources import files

from alembic import command
from alembic.config import Config

from mailstack_core.database import normalize_database_url


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("mailstack_core") / "migrations"))
    url = normalize_database_url(database_url).render_as_string(hide_password=False)
    # ConfigParser interpolation would choke on a literal % in a password.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Migrate the mailstack database.")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL URL (default: $DATABASE_URL)",
    )
    parser.add_argument("revision", nargs="?", default="head")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("no database: pass --database-url or set DATABASE_URL")
    upgrade(args.database_url, args.revision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
