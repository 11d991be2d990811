"""Idempotency keys claimed before their request is handled: a key row with no `email_id` is a
request still in flight (its `email_ids` are the ids it will store, and identify the claim);
its email's transaction completes it. A duplicate meanwhile is answered 409.

A downgrade drops the claims still in flight (their requests then store nothing and answer 409;
the client's retry is accepted).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("idempotency_keys", "email_id", nullable=True)
    # A claim names the ids its request will store: that is how the request finds it again.
    op.create_check_constraint(
        "idempotency_keys_claim_names_its_emails",
        "idempotency_keys",
        "email_id IS NOT NULL OR email_ids IS NOT NULL",
    )


def downgrade() -> None:
    op.drop_constraint("idempotency_keys_claim_names_its_emails", "idempotency_keys")
    op.execute("DELETE FROM idempotency_keys WHERE email_id IS NULL")
    op.alter_column("idempotency_keys", "email_id", nullable=False)
