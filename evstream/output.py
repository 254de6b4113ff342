"""Shared CLI output: rich tables for people, JSON for scripts (``--output json``)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["OutputFormat", "console", "err_console", "print_json", "table"]

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class OutputFormat(StrEnum):
    """How a command prints its result."""

    table = "table"
    json = "json"


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout, with nothing else on the line."""
    print(json.dumps(data, indent=2, default=str))


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    """Print a rich table of ``rows`` under ``columns``."""
    out = Table(title=title, title_justify="left")
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(out)
