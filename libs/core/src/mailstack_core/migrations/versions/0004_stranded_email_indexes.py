"""Indexes for the reconciler's search for stranded emails (QUEUED or PROCESSING, untouched).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "emails_queued_updated_at_idx",
        "emails",
        ["updated_at"],
        postgresql_where=sa.text("status = 'QUEUED'"),
    )
    op.create_index(
        "emails_processing_lease_idx",
        "emails",
        ["lease_expires_at"],
        postgresql_where=sa.text("status = 'PROCESSING'"),
    )


def downgrade() -> None:
    op.drop_index("emails_processing_lease_idx", table_name="emails")
    op.drop_index("emails_queued_updated_at_idx", table_name="emails")
