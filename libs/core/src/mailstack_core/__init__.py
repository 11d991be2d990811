"""What the mailstack services agree on: tables, statuses, the queue message and migrations."""
