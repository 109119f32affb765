"""Writes what `--junit`, `--json-file` and `--out` ask for, from stored runs and their analyses."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import sqlite_utils

from soak.judging import RunAnalysis
from soak.report.junit import write_junit
from soak.report.plots import write_report
from soak.store import load_series, run_row
from soak.units import cell_label, plain


def _label(run: dict) -> str:
    """profile[k=v,k=v] for a matrix cell, the profile alone otherwise."""
    cell = json.loads(run["cell"]) if run.get("cell") else {}
    return run["profile"] + (f"[{cell_label(cell, sep=',')}]" if cell else "")


def findings_json(db: sqlite_utils.Database, analyses: list[RunAnalysis]) -> dict:
    runs = []
    for a in analyses:
        run = run_row(db, a.run_id)
        runs.append(
            {
                "run_id": a.run_id,
                "profile": run["profile"],
                "cell": json.loads(run["cell"] or "{}"),
                "status": a.status,
                "verdict": a.verdict,
                "exit_code": a.exit_code,
                "findings": [plain(asdict(f)) for f in a.findings],
            }
        )
    return {"runs": runs}


def write_outputs(
    db: sqlite_utils.Database,
    analyses: list[RunAnalysis],
    junit: str | None = None,
    json_path: str | None = None,
    out: str | None = None,
) -> list[Path]:
    written: list[Path] = []
    if junit:
        write_junit(
            junit,
            [(a.run_id, _label(run_row(db, a.run_id)), a.status, a.findings) for a in analyses],
        )
        written.append(Path(junit))
    if json_path:
        Path(json_path).write_text(json.dumps(findings_json(db, analyses), indent=2))
        written.append(Path(json_path))
    if out:
        for a in analyses:
            run = run_row(db, a.run_id)
            series = load_series(db, a.run_id, [f.metric for f in a.findings])
            target = Path(out) if len(analyses) == 1 else Path(out) / f"run{a.run_id}"
            title = f"profile {_label(run)}, status {a.status}, verdict {a.verdict}"
            written.append(write_report(a.run_id, title, series, a.findings, target))
    return written
