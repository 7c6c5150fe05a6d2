"""Printing helpers shared by CLI commands: `-o table|json|yaml` on every command that prints data.

`json` and `yaml` print exactly what the API answered (for scripts: `aiot device ls -o json | jq ...`), on
stdout and without colour; `table` (the default) is for people: rich tables whose cells wrap instead of
cutting ids short on a narrow terminal. Commands keep their older `--json` flag as a synonym of `-o json`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


class Output(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


OUTPUT = typer.Option(Output.table, "-o", "--output", help="table, json (the API's JSON) or yaml", case_sensitive=False)
AS_JSON = typer.Option(False, "--json", help="same as -o json", hidden=True)


def print_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def print_table(rows: Iterable[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    """Ids (`id`, `*_id`) keep their full width on one line, to be copied; other cells wrap when space is short."""
    cells = [["" if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows]
    table = Table(title=title)
    for i, column in enumerate(columns):
        if column == "id" or column.endswith("_id"):
            width = max([len(column), *(len(r[i]) for r in cells)])
            table.add_column(column, no_wrap=True, min_width=width)
        else:
            table.add_column(column, overflow="fold", min_width=min(len(column), 6))
    for r in cells:
        table.add_row(*r)
    console.print(table)


def emit(
    data: Any,
    output: Output,
    columns: Sequence[str] | None = None,
    *,
    title: str | None = None,
    as_json: bool = False,
    table_rows: Callable[[Any], Iterable[dict[str, Any]]] | None = None,
) -> None:
    """Print `data` (the API's answer) as asked. A table needs `columns` (a list of rows, or `table_rows(data)`
    for the rows shown, e.g. with derived columns); without columns, `table` prints the JSON, coloured."""
    if as_json or output == Output.json:
        typer.echo(json.dumps(data, indent=2, default=str))
    elif output == Output.yaml:
        import yaml

        typer.echo(
            yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False, allow_unicode=True), nl=False
        )
    elif columns is None:
        print_json(data)
    else:
        print_table(table_rows(data) if table_rows else data, columns, title=title)
