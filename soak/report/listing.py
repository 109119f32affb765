"""Tables of `soak runs` and `soak query` (results and the canned list) for the console."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from soak.formatting import cell_label, duration, human
from soak.profile import MATRIX_KEYS
from soak.report.analyze import STATUS_STYLE
from soak.triage.canned import CANNED, CannedQuery
from soak.triage.lookup import iso_time, local_time
from soak.triage.query import QueryResult
from soak.triage.runs import RunSummary


def run_json(run: RunSummary) -> dict[str, Any]:
    """The JSON/CSV row: plain values, times both as epoch and as local ISO text."""
    return {
        "id": run.id,
        "started": iso_time(run.started_at),
        "started_at": run.started_at,
        "profile": run.profile,
        "matrix": run.matrix,
        "cell": cell_label(run.cell, MATRIX_KEYS) if run.cell else None,
        "status": run.status,
        "stored_status": run.stored_status,
        "abandoned_reason": run.abandoned_reason or None,
        "verdict": run.verdict,
        "duration_s": None if run.duration_s is None else round(run.duration_s, 3),
        "iterations_done": run.iterations_done,
        "iterations_planned": run.iterations_planned,
        "worst_metric": run.worst.metric if run.worst else None,
        "worst": run.worst.describe() if run.worst else None,
    }


def runs_table(runs: list[RunSummary], db: str) -> Table:
    """One row per run, newest first (as listed), status coloured."""
    table = Table(title=Text(f"runs in {db}"))
    for col in (
        "id",
        "started",
        "profile",
        "cell",
        "status",
        "verdict",
        "duration",
        "iterations",
        "worst metric",
    ):
        table.add_column(
            col, justify="right" if col in ("id", "duration", "iterations") else "left"
        )
    for r in runs:
        table.add_row(
            str(r.id),
            local_time(r.started_at),
            Text(r.profile),
            Text(cell_label(r.cell, MATRIX_KEYS)),
            Text(r.status, style=STATUS_STYLE.get(r.status, "")),
            Text(r.verdict or "-"),
            duration(r.duration_s),
            f"{r.iterations_done if r.iterations_done is not None else '-'}/"
            f"{r.iterations_planned if r.iterations_planned is not None else '-'}",
            Text(r.worst.describe() if r.worst else "-"),
        )
    return table


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
