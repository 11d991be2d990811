"""The web console's sessions, and a BRIN index that finds the last hour of history.

A session row is what a signed-in browser's cookie stands for: the cookie holds a random id,
the row only its SHA-256 (a database read does not yield a usable cookie), with the API key it
was opened with, its tenant, its CSRF token and its expiry. Deleting or revoking the key ends it.

`email_history` is append-only and its `at` grows with its physical order: a BRIN index on it
is a few pages, costs the writers next to nothing, and lets the console's "sends per minute over
the last hour" read only the newest blocks.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id_sha256", postgresql.BYTEA, primary_key=True),
        sa.Column(
            "key_id", sa.Text, sa.ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "tenant_id", sa.Text, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("csrf_token", sa.Text, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("console_sessions_expires_at_idx", "console_sessions", ["expires_at"])
    op.create_index("console_sessions_key_id_idx", "console_sessions", ["key_id"])
    op.create_index("email_history_at_brin_idx", "email_history", ["at"], postgresql_using="brin")


def downgrade() -> None:
    op.drop_index("email_history_at_brin_idx", table_name="email_history")
    op.drop_table("console_sessions")
