"""Tables of `soak query` for the console: a query's results and the canned list."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from soak.formatting import human
from soak.triage.canned import CANNED, CannedQuery
from soak.triage.query import QueryResult


def query_table(result: QueryResult, canned: CannedQuery | None, max_rows: int) -> Table:
    """The first ``max_rows`` rows; byte columns in KiB/MiB (--csv and --json keep exact
    numbers)."""
    table = Table(title=Text(f"{canned.name}: {canned.description}") if canned else None)
    for col in result.columns:
        table.add_column(col, overflow="fold")
    # Byte columns read better in KiB/MiB; --csv and --json keep the exact numbers.
    in_bytes = [col.endswith("_bytes") for col in result.columns]
    for row in result.rows[:max_rows]:
        table.add_row(
            *(
                Text(human(v, "x_bytes")) if b and isinstance(v, (int, float)) else _cell(v)
                for v, b in zip(row, in_bytes, strict=True)
            )
        )
    return table


def canned_table() -> Table:
    """The canned queries with what they need and take."""
    table = Table(title=Text("canned queries: soak query NAME [--param NAME=VALUE ...]"))
    for col in ("name", "description", "parameters"):
        table.add_column(col, overflow="fold")
    for q in CANNED.values():
        description = q.description + (f" Needs {q.needs}." if q.needs else "")
        table.add_row(q.name, Text(description), ", ".join(q.params) or "-")
    return table


def _cell(value: Any) -> Text:
    """Table cells as Text, so brackets in stored messages are never read as markup."""
    if value is None:
        return Text("NULL", style="dim")
    if isinstance(value, float):
        return Text(f"{value:.6g}")
    return Text(str(value))
