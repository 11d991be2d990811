"""Initial schema: emails, the publishing outbox, the append-only history and its guard.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = "'QUEUED', 'PROCESSING', 'SENT', 'FAILED'"

HISTORY_GUARD = """
CREATE FUNCTION email_history_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    retention_days integer;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'email_history is append-only: UPDATE of row % refused', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    SELECT history_retention_days INTO retention_days FROM retention_policy WHERE singleton = 1;
    IF OLD.at >= now() - make_interval(days => COALESCE(retention_days, 183)) THEN
        RAISE EXCEPTION
            'email_history is append-only: DELETE of row % refused, it is inside the % day '
            'retention window', OLD.id, COALESCE(retention_days, 183)
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN OLD;
END;
$$;

CREATE TRIGGER email_history_no_update
    BEFORE UPDATE ON email_history
    FOR EACH ROW EXECUTE FUNCTION email_history_guard();

CREATE TRIGGER email_history_delete_only_past_retention
    BEFORE DELETE ON email_history
    FOR EACH ROW EXECUTE FUNCTION email_history_guard();

CREATE FUNCTION email_history_refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'email_history is append-only: TRUNCATE refused'
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER email_history_no_truncate
    BEFORE TRUNCATE ON email_history
    FOR EACH STATEMENT EXECUTE FUNCTION email_history_refuse_truncate();
"""


def upgrade() -> None:
    op.create_table(
        "emails",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("sender_email", sa.Text, nullable=False),
        sa.Column("sender_name", sa.Text),
        sa.Column("to_recipients", postgresql.JSONB, nullable=False),
        sa.Column(
            "cc_recipients", postgresql.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")
        ),
        sa.Column(
            "bcc_recipients",
            postgresql.JSONB,
            nullable=False,
            server_default=sa.text("'[]'::jsonb"),
        ),
        sa.Column("reply_to", postgresql.JSONB),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("text_body", sa.Text),
        sa.Column("html_body", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("provider", sa.Text),
        sa.Column("provider_message_id", sa.Text),
        sa.Column("provider_transaction_id", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text),
        sa.Column("request_body", sa.Text, nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(f"status IN ({STATUSES})", name="emails_status_known"),
        sa.CheckConstraint(
            "text_body IS NOT NULL OR html_body IS NOT NULL", name="emails_has_body"
        ),
    )
    op.create_index("emails_created_at_id_idx", "emails", ["created_at", "id"])
    op.create_index("emails_status_created_at_idx", "emails", ["status", "created_at"])

    op.create_table(
        "email_outbox",
        sa.Column(
            "email_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("emails.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("email_outbox_next_attempt_at_idx", "email_outbox", ["next_attempt_at"])

    op.create_table(
        "email_history",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column(
            "email_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("emails.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("provider", sa.Text),
        sa.Column(
            "detail", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
        sa.Column(
            "at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.clock_timestamp(),
        ),
        sa.CheckConstraint(f"status IN ({STATUSES})", name="email_history_status_known"),
    )
    op.create_index("email_history_email_id_id_idx", "email_history", ["email_id", "id"])

    op.create_table(
        "retention_policy",
        sa.Column("singleton", sa.Integer, primary_key=True, server_default=sa.text("1")),
        sa.Column(
            "history_retention_days", sa.Integer, nullable=False, server_default=sa.text("183")
        ),
        sa.CheckConstraint("singleton = 1", name="retention_policy_single_row"),
        sa.CheckConstraint("history_retention_days >= 1", name="retention_policy_positive"),
    )
    op.execute("INSERT INTO retention_policy (singleton) VALUES (1)")
    op.execute(HISTORY_GUARD)


def downgrade() -> None:
    op.drop_table("email_history")
    op.execute("DROP FUNCTION email_history_guard()")
    op.execute("DROP FUNCTION email_history_refuse_truncate()")
    op.drop_table("retention_policy")
    op.drop_table("email_outbox")
    op.drop_table("emails")
