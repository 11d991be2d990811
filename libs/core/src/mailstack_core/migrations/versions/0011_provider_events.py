"""Delivery truth: the provider event statuses, a provider event id on history rows (unique per
provider, so an event delivered twice is one row), an index to find an email by its provider
message id, and each tenant's suppression list.

A downgrade refuses to run while an email or a history row has one of the new statuses.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PREVIOUS_STATUSES = "'SCHEDULED', 'QUEUED', 'PROCESSING', 'SENT', 'FAILED', 'CANCELED'"
STATUSES = (
    f"{PREVIOUS_STATUSES}, 'DEFERRED', 'DELIVERED', 'OPENED', 'CLICKED', 'UNSUBSCRIBED', "
    "'BOUNCED', 'COMPLAINED'"
)
STATUS_CHECKS = (("emails", "emails_status_known"), ("email_history", "email_history_status_known"))


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
    op.add_column("email_history", sa.Column("provider_event_id", sa.Text))
    op.create_index(
        "email_history_provider_event_idx",
        "email_history",
        ["provider", "provider_event_id"],
        unique=True,
        postgresql_where=sa.text("provider_event_id IS NOT NULL"),
    )
    op.create_index(
        "emails_provider_message_id_idx",
        "emails",
        ["provider_message_id"],
        postgresql_where=sa.text("provider_message_id IS NOT NULL"),
    )
    op.create_table(
        "suppressions",
        sa.Column(
            "tenant_id",
            sa.Text,
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("email", sa.Text, primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("email_id", postgresql.UUID(as_uuid=True)),
        sa.Column("provider", sa.Text),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("email = lower(email)", name="suppressions_email_lower"),
        sa.CheckConstraint(
            "reason IN ('hard_bounce', 'complaint', 'manual')", name="suppressions_reason_known"
        ),
    )
    op.create_index(
        "suppressions_tenant_created_at_idx",
        "suppressions",
        ["tenant_id", "created_at", "email"],
    )


def downgrade() -> None:
    op.drop_index("suppressions_tenant_created_at_idx", table_name="suppressions")
    op.drop_table("suppressions")
    op.drop_index("emails_provider_message_id_idx", table_name="emails")
    op.drop_index("email_history_provider_event_idx", table_name="email_history")
    op.drop_column("email_history", "provider_event_id")
    _replace_status_checks(PREVIOUS_STATUSES)
