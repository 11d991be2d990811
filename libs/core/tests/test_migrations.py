"""The migrations apply from scratch, match the table definitions, and roll back cleanly."""

import pytest
from sqlalchemy import create_engine, inspect, text

from mailstack_core.database import normalize_database_url
from mailstack_core.migrate import alembic_revisions, downgrade, upgrade
from mailstack_core.schema import known_revisions
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


def test_emails_accepted_before_tenants_belong_to_the_default_tenant(database_url: str) -> None:
    downgrade(database_url, "0002")
    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO emails (id, sender_email, to_recipients, subject, text_body,"
                    " status, request_body) VALUES (gen_random_uuid(), 'a@example.com',"
                    " '[]', 's', 't', 'QUEUED', '{}')"
                )
            )
        upgrade(database_url)
        with engine.connect() as connection:
            owners = connection.execute(text("SELECT DISTINCT tenant_id FROM emails")).scalars()
            assert list(owners) == ["default"]
            tenant_ids = connection.execute(text("SELECT id FROM tenants")).scalars()
            assert list(tenant_ids) == ["default"]
    finally:
        engine.dispose()


def test_a_fresh_database_has_no_tenant_until_one_is_created(database_url: str) -> None:
    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM tenants")).scalar_one() == 0
    finally:
        engine.dispose()


def test_a_downgrade_below_0008_drops_the_claims_in_flight_and_keeps_finished_keys(
    database_url: str,
) -> None:
    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO tenants (id) VALUES ('acme')"))
            email_id = connection.execute(
                text(
                    "INSERT INTO emails (id, tenant_id, sender_email, to_recipients, subject,"
                    " text_body, status, request_body) VALUES (gen_random_uuid(), 'acme',"
                    " 'a@example.com', '[]', 's', 't', 'QUEUED', '{}') RETURNING id"
                )
            ).scalar_one()
            connection.execute(
                text(
                    "INSERT INTO idempotency_keys (tenant_id, key, request_sha256, email_id,"
                    " email_ids, expires_at) VALUES"
                    " ('acme', 'done', '\\x00', :id, ARRAY[:id], now() + interval '1 day'),"
                    " ('acme', 'in-flight', '\\x00', NULL, ARRAY[gen_random_uuid()],"
                    "  now() + interval '1 minute')"
                ),
                {"id": email_id},
            )
        # Its own parent, whatever the migrations are re-chained to.
        downgrade(database_url, "0008-1")
        with engine.connect() as connection:
            keys = connection.execute(text("SELECT key FROM idempotency_keys")).scalars()
            assert list(keys) == ["done"]
        upgrade(database_url)
    finally:
        engine.dispose()


def test_the_revisions_read_from_file_names_are_alembics() -> None:
    """The gateway's readiness check reads the revisions without Alembic (schema.py): the
    migration files must be named after the revision they hold."""
    assert known_revisions() == alembic_revisions()
