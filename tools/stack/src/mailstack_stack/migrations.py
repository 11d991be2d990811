"""Bring a database to the latest schema with mailstack_core's migration command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


class MigrationError(RuntimeError):
    """The migration command failed."""


def migrate(database_url: str, log_file: Path, python: str = sys.executable) -> None:
    """Run `python -m mailstack_core.migrate --database-url URL` (upgrade to head)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    argv = [python, "-m", "mailstack_core.migrate", "--database-url", database_url]
    with log_file.open("a") as log:
        result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
        raise MigrationError(
            f"migrations failed (exit {result.returncode}); see {log_file}:\n{tail}"
        )
