"""The migrations apply from scratch, match the table definitions, and roll back cleanly."""

import pytest
from sqlalchemy import create_engine, inspect

from mailstack_core.database import normalize_database_url
from mailstack_core.migrate import downgrade, upgrade
from mailstack_core.tables import metadata

pytestmark = pytest.mark.integration


def test_migrated_schema_has_every_table_and_column_the_code_uses(database_url: str) -> None:
    engine = create_engine(normalize_database_url(database_url))
    try:
        inspector = inspect(engine)
        for table in metadata.sorted_tables:
            columns = {column["name"] for column in inspector.get_columns(table.name)}
            assert columns == {column.name for column in table.columns}, table.name
    finally:
        engine.dispose()


def test_downgrade_to_base_and_upgrade_again(database_url: str) -> None:
    downgrade(database_url, "base")
    engine = create_engine(normalize_database_url(database_url))
    try:
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        upgrade(database_url)
        assert {
            "emails",
            "email_history",
            "email_outbox",
            "retention_policy",
            "provider_breakers",
        } <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
