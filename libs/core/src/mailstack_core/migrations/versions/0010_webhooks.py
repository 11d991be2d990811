"""Signed webhooks out: the tenants' endpoints, a durable outbox of events (one row per event and
endpoint), the delivery attempts, and the trigger that turns every history row into events.

The trigger runs in the transaction that inserts the history row: an email's change of status
and the events announcing it commit together, or not at all. The event type is derived from the
status (`email.` + lower-case status), so a status added later needs no change here.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One event per enabled endpoint of the email's tenant that subscribes to the type (or to '*').
# The payload's detail is a summary: the history detail's scalar entries only (a provider's raw
# event, kept in the history, is not sent on). The event id is stable across every retry and
# replay: it is the `webhook-id` a receiver deduplicates on.
HISTORY_TRIGGER = """
CREATE FUNCTION email_history_webhook_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    event_type text := 'email.' || lower(NEW.status);
BEGIN
    INSERT INTO webhook_events (id, endpoint_id, email_id, history_id, type, payload)
    SELECT
        'msg_' || replace(gen_random_uuid()::text, '-', ''),
        endpoint.id,
        NEW.email_id,
        NEW.id,
        event_type,
        jsonb_build_object(
            'type', event_type,
            'timestamp', to_char(NEW.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'data', jsonb_build_object(
                'email_id', NEW.email_id,
                'status', NEW.status,
                'provider', NEW.provider,
                'detail', COALESCE(
                    (SELECT jsonb_object_agg(entry.key, entry.value)
                     FROM jsonb_each(NEW.detail) AS entry
                     WHERE jsonb_typeof(entry.value) IN ('string', 'number', 'boolean')),
                    '{}'::jsonb),
                'tags', to_jsonb(email.tags),
                'metadata', email.metadata
            )
        )
    FROM emails AS email
    JOIN webhook_endpoints AS endpoint
        ON endpoint.tenant_id = email.tenant_id
        AND endpoint.enabled
        AND (endpoint.events @> ARRAY[event_type] OR endpoint.events @> ARRAY['*'])
    WHERE email.id = NEW.email_id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER email_history_webhook_events
    AFTER INSERT ON email_history
    FOR EACH ROW
    EXECUTE FUNCTION email_history_webhook_events();
"""


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.Text,
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("events", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("disabled_reason", sa.Text),
        sa.Column("first_failure_at", sa.DateTime(timezone=True)),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("cardinality(events) > 0", name="webhook_endpoints_has_events"),
    )
    op.create_index("webhook_endpoints_tenant_id_idx", "webhook_endpoints", ["tenant_id"])
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column(
            "endpoint_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("email_id", postgresql.UUID(as_uuid=True)),
        sa.Column("history_id", sa.BigInteger),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("payload", postgresql.JSONB, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("last_error", sa.Text),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.Column("gave_up_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("endpoint_id", "history_id", name="webhook_events_endpoint_history"),
    )
    op.create_index(
        "webhook_events_due_idx",
        "webhook_events",
        ["next_attempt_at"],
        postgresql_where=sa.text("delivered_at IS NULL AND gave_up_at IS NULL"),
    )
    op.create_index(
        "webhook_events_endpoint_id_idx", "webhook_events", ["endpoint_id", "created_at"]
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column(
            "event_id",
            sa.Text,
            sa.ForeignKey("webhook_events.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "endpoint_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("duration_ms", sa.Integer, nullable=False),
    )
    op.create_index(
        "webhook_deliveries_endpoint_id_idx", "webhook_deliveries", ["endpoint_id", "id"]
    )
    op.create_index("webhook_deliveries_event_id_idx", "webhook_deliveries", ["event_id"])
    op.execute(HISTORY_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER email_history_webhook_events ON email_history")
    op.execute("DROP FUNCTION email_history_webhook_events()")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_events")
    op.drop_table("webhook_endpoints")
