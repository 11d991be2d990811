"""Output: rich tables for a person at a terminal, JSON for programs; errors on stderr."""

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


def is_terminal() -> bool:
    return sys.stdout.isatty()


def cell(value: Any) -> str:
    """A value as a table shows it: lists joined, mappings as compact JSON, None as -."""
    if value is None or value == [] or value == {}:
        return "-"
    if isinstance(value, list):
        return ", ".join(cell(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def address(value: Mapping[str, Any] | None) -> str:
    if not value:
        return "-"
    return f"{value['name']} <{value['email']}>" if value.get("name") else str(value["email"])


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        # Not a terminal (a pipe, a file, a test): no colours, and wide enough not to cut ids.
        self.console = Console(soft_wrap=False, width=None if is_terminal() else 200)
        self.errors = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

    def data(self, value: Any) -> None:
        """One JSON document on stdout."""
        sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def line(self, value: Any) -> None:
        """One JSON document on one line (a stream of them: `tail --json`)."""
        sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def table(
        self, columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None
    ) -> None:
        table = Table(*columns, title=title, title_justify="left")
        for row in rows:
            table.add_row(*(Text(cell(value)) for value in row))
        self.console.print(table)

    def record(self, fields: Iterable[tuple[str, Any]]) -> None:
        """One object as a two-column table of its fields."""
        table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
        table.add_column(style="bold")
        table.add_column()
        for name, value in fields:
            table.add_row(name, Text(cell(value)))
        self.console.print(table)

    def say(self, message: str) -> None:
        self.console.print(Text(message))

    def note(self, message: str) -> None:
        """A remark for the person (stderr), never part of the output a program reads."""
        self.errors.print(Text(message))

    def error(self, message: str, details: Iterable[str] = ()) -> None:
        self.errors.print(Text(f"mailstack: {message}", style="bold red"))
        for detail in details:
            self.errors.print(Text(f"  {detail}"))
