"""`soak runs`: the table of runs for the console, and each run as a JSON/CSV row."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from soak.formatting import cell_label, duration
from soak.profile import MATRIX_KEYS
from soak.report.analyze import STATUS_STYLE
from soak.triage.lookup import iso_time, local_time
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
