"""Scheduled send and cancel: the SCHEDULED and CANCELED statuses, `emails.send_at`, the ids of
a batch's emails under its idempotency key, and a guard on the transitions the new statuses allow.

A downgrade refuses to run while an email or a history row has one of the new statuses.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = "'SCHEDULED', 'QUEUED', 'PROCESSING', 'SENT', 'FAILED', 'CANCELED'"
PREVIOUS_STATUSES = "'QUEUED', 'PROCESSING', 'SENT', 'FAILED'"
STATUS_CHECKS = (("emails", "emails_status_known"), ("email_history", "email_history_status_known"))

# Only the scheduler leaves SCHEDULED (for QUEUED), only a cancel enters CANCELED (from SCHEDULED
# or QUEUED), and nothing leaves CANCELED or re-enters SCHEDULED: whatever a bug in any service
# or job tries, a canceled email is never sent and a scheduled one never sent early. The WHEN
# clause keeps every other transition (the processor's hot path) free of the function call.
TRANSITION_GUARD = """
CREATE FUNCTION emails_status_transition_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.status = 'SCHEDULED' AND NEW.status IN ('QUEUED', 'CANCELED'))
       OR (OLD.status = 'QUEUED' AND NEW.status = 'CANCELED') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'email %: status % -> % refused', OLD.id, OLD.status, NEW.status
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER emails_status_transition_guard
    BEFORE UPDATE OF status ON emails
    FOR EACH ROW
    WHEN (
        OLD.status IS DISTINCT FROM NEW.status
        AND (OLD.status IN ('SCHEDULED', 'CANCELED') OR NEW.status IN ('SCHEDULED', 'CANCELED'))
    )
    EXECUTE FUNCTION emails_status_transition_guard();
"""


def _replace_status_checks(statuses: str) -> None:
    for table, name in STATUS_CHECKS:
        op.drop_constraint(name, table, type_="check")
        # NOT VALID, then VALIDATE: the scan of existing rows does not block writes.
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK (status IN ({statuses})) NOT VALID"
        )
        op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")


def upgrade() -> None:
    _replace_status_checks(STATUSES)
    op.add_column("emails", sa.Column("send_at", sa.DateTime(timezone=True)))
    op.create_index(
        "emails_scheduled_send_at_idx",
        "emails",
        ["send_at"],
        postgresql_where=sa.text("status = 'SCHEDULED'"),
    )
    op.add_column(
        "idempotency_keys",
        sa.Column("email_ids", postgresql.ARRAY(postgresql.UUID(as_uuid=True))),
    )
    op.execute(TRANSITION_GUARD)


def downgrade() -> None:
    op.execute("DROP TRIGGER emails_status_transition_guard ON emails")
    op.execute("DROP FUNCTION emails_status_transition_guard()")
    op.drop_column("idempotency_keys", "email_ids")
    op.drop_index("emails_scheduled_send_at_idx", table_name="emails")
    op.drop_column("emails", "send_at")
    _replace_status_checks(PREVIOUS_STATUSES)
