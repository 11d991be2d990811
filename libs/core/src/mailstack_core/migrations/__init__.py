"""Alembic migrations of the mailstack schema."""
