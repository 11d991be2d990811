"""Custom headers, tags, metadata and the attachments' manifest of an email (issue 11).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# name, type, default: constant defaults, so adding them rewrites no row of a large table.
_COLUMNS = (
    ("headers", postgresql.JSONB, "'{}'::jsonb"),
    ("tags", postgresql.ARRAY(sa.Text), "'{}'::text[]"),
    ("metadata", postgresql.JSONB, "'{}'::jsonb"),
    ("attachments", postgresql.JSONB, "'[]'::jsonb"),
)


def upgrade() -> None:
    for name, type_, default in _COLUMNS:
        column = sa.Column(name, type_, nullable=False, server_default=sa.text(default))
        op.add_column("emails", column)
    op.create_index("emails_tags_idx", "emails", ["tags"], postgresql_using="gin")


def downgrade() -> None:
    op.drop_index("emails_tags_idx", table_name="emails")
    for name, _, _ in reversed(_COLUMNS):
        op.drop_column("emails", name)
