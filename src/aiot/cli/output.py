"""Printing helpers shared by CLI commands (rich tables, JSON mode)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def print_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def print_table(rows: Iterable[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)
