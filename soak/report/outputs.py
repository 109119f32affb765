"""Writes what `--junit`, `--json-file` and `--out` ask for, from stored runs and their analyses."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import sqlite_utils

from soak.analysis.site_verdict import SiteFinding
from soak.analysis.verdict import Finding
from soak.errors import OutputError
from soak.formatting import cell_label, plain
from soak.report.junit import write_junit
from soak.run_analysis import RunAnalysis
from soak.store import load_series, load_site_series, run_row


def _label(run: dict) -> str:
    """profile[k=v,k=v] for a matrix cell, the profile alone otherwise."""
    cell = json.loads(run["cell"]) if run.get("cell") else {}
    return run["profile"] + (f"[{cell_label(cell, sep=',')}]" if cell else "")


def _site_json(site: SiteFinding) -> dict:
    """A site finding for JSON: kind `site`, its stack summary and the numbers of its bytes."""
    numbers = {k: v for k, v in asdict(site.bytes).items() if k not in ("metric", "kind")}
    return plain(
        {
            **numbers,
            "metric": site.metric,
            "kind": "site",
            "site_id": site.site_id,
            "summary": site.summary,
            "thread": site.thread,
            "python_frame": site.python_frame,
            "verdict": site.verdict,
            "count_slope": site.count_slope,
            "reason": site.reason,
        }
    )


def _sites_json(a: RunAnalysis) -> dict:
    """The run's sites and site notes; nothing at all for a run without attribution, so its
    JSON stays as it was."""
    if not a.sites and not a.site_notes:
        return {}
    return {"sites": [_site_json(s) for s in a.sites], "site_notes": a.site_notes}


def _site_cases(a: RunAnalysis) -> list[Finding]:
    """Site findings as JUnit cases (`site:<id>`): a growing site is a failing case."""
    return [replace(s.bytes, verdict=s.verdict, reason=s.reason, kind="site") for s in a.sites]


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
                **_sites_json(a),
            }
        )
    return {"runs": runs}


def _writable_folder(flag: str, path: Path, folder: Path) -> None:
    if not folder.is_dir():
        raise OutputError(f"{flag} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: folder {folder} is not writable")


def check_output_paths(
    junit: str | None = None, json_path: str | None = None, out: str | None = None
) -> None:
    """Refuse output paths that cannot be written, before a run starts or anything is stored,
    so that a typo in a CI job's --junit costs seconds rather than a whole soak run."""
    for flag, value in (("--junit", junit), ("--json-file", json_path)):
        if not value:
            continue
        path = Path(value)
        if path.is_dir():
            raise OutputError(f"{flag} {path}: is a folder, not a file")
        if path.exists() and not os.access(path, os.W_OK):
            raise OutputError(f"{flag} {path}: the file is not writable")
        _writable_folder(flag, path, path.absolute().parent)
    if out:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise OutputError(f"--out {path}: is a file, not a folder")
        # write_report makes missing folders: the nearest existing one must take them.
        existing = path.absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise OutputError(f"--out {path}: {existing} is a file, not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(f"--out {path}: folder {existing} is not writable")


def write_outputs(
    db: sqlite_utils.Database,
    analyses: list[RunAnalysis],
    junit: str | None = None,
    json_path: str | None = None,
    out: str | None = None,
) -> list[Path]:
    """Write the files asked for; a file system error is an :class:`OutputError` naming the
    path (the runs' verdicts are stored already and stay)."""
    try:
        return _write_outputs(db, analyses, junit, json_path, out)
    except OSError as exc:
        where = exc.filename or junit or json_path or out
        raise OutputError(f"could not write {where}: {exc.strerror or exc}") from exc


def _write_outputs(
    db: sqlite_utils.Database,
    analyses: list[RunAnalysis],
    junit: str | None,
    json_path: str | None,
    out: str | None,
) -> list[Path]:
    written: list[Path] = []
    if junit:
        write_junit(
            junit,
            [
                (a.run_id, _label(run_row(db, a.run_id)), a.status, a.findings + _site_cases(a))
                for a in analyses
            ],
        )
        written.append(Path(junit))
    if json_path:
        Path(json_path).write_text(json.dumps(findings_json(db, analyses), indent=2))
        written.append(Path(json_path))
    if out:
        # matplotlib only once the arguments are checked: on import it may warn (no HOME).
        from soak.report.plots import write_report, write_sites_report

        for a in analyses:
            run = run_row(db, a.run_id)
            series = load_series(db, a.run_id, [f.metric for f in a.findings])
            target = Path(out) if len(analyses) == 1 else Path(out) / f"run{a.run_id}"
            title = f"profile {_label(run)}, status {a.status}, verdict {a.verdict}"
            written.append(write_report(a.run_id, title, series, a.findings, target))
            if a.sites:
                sites = load_site_series(db, a.run_id)
                written.append(write_sites_report(sites, a.sites, a.site_notes, target))
    return written
