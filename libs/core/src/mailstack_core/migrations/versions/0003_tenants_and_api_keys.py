"""Tenants and their API keys; every email belongs to a tenant.

Emails accepted before this revision belong to the tenant `default`, created only if such
emails exist.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEGACY_TENANT = "default"


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("send_per_minute", sa.Integer),
        sa.Column("read_per_minute", sa.Integer),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("id ~ '^[a-z0-9][a-z0-9-]{0,62}$'", name="tenants_id_slug"),
        sa.CheckConstraint(
            "send_per_minute IS NULL OR send_per_minute > 0", name="tenants_send_limit"
        ),
        sa.CheckConstraint(
            "read_per_minute IS NULL OR read_per_minute > 0", name="tenants_read_limit"
        ),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column(
            "tenant_id",
            sa.Text,
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("secret_sha256", postgresql.BYTEA, nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
    )
    op.create_index("api_keys_tenant_id_idx", "api_keys", ["tenant_id"])

    op.add_column("emails", sa.Column("tenant_id", sa.Text))
    op.execute(
        f"INSERT INTO tenants (id) SELECT '{LEGACY_TENANT}' WHERE EXISTS (SELECT 1 FROM emails)"
    )
    op.execute(f"UPDATE emails SET tenant_id = '{LEGACY_TENANT}'")
    op.alter_column("emails", "tenant_id", nullable=False)
    op.create_foreign_key("emails_tenant_id_fkey", "emails", "tenants", ["tenant_id"], ["id"])
    op.create_index("emails_tenant_created_at_id_idx", "emails", ["tenant_id", "created_at", "id"])
    op.create_index(
        "emails_tenant_status_created_at_idx", "emails", ["tenant_id", "status", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("emails_tenant_status_created_at_idx", table_name="emails")
    op.drop_index("emails_tenant_created_at_id_idx", table_name="emails")
    op.drop_constraint("emails_tenant_id_fkey", "emails", type_="foreignkey")
    op.drop_column("emails", "tenant_id")
    op.drop_table("api_keys")
    op.drop_table("tenants")
