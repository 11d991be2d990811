"""Databases for tests: made from a migrated template, dropped afterwards."""

from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from mailstack_stack.postgres import libpq_url


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _execute(admin_url: str, statement: sql.Composed) -> None:
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as connection:
        connection.execute(statement)


def create_database(admin_url: str, name: str, template: str) -> None:
    """Database `name`, a copy of `template`."""
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}")
    _execute(admin_url, statement.format(sql.Identifier(name), sql.Identifier(template)))


def drop_database(admin_url: str, name: str) -> None:
    """Drop `name` if it exists, disconnecting whoever is still connected to it."""
    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
    _execute(admin_url, statement.format(sql.Identifier(name)))
