"""`soak runs`: the newest runs with their shown status and the metric that most needs a look."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from soak.formatting import finite, human
from soak.triage.abandoned import display_status, median_walls
from soak.triage.lookup import parse_cell, run_duration


@dataclass(frozen=True)
class WorstMetric:
    """The finding that most deserves a look, and how far past its limit it is.

    ``basis`` says what ``ratio`` divides by: "budget" (total growth / growth budget) or
    "threshold" (slope / slope threshold). ``ratio`` is inf for growth against a zero
    allowance (a counter that did not come back, a zero shm budget).
    """

    metric: str
    verdict: str
    ratio: float
    basis: str
    growth: float | None

    def describe(self) -> str:
        if self.verdict == "leak":
            growth = (
                ""
                if self.growth is None
                else f" {'+' if self.growth >= 0 else ''}" + human(self.growth, self.metric)
            )
            if not math.isfinite(self.ratio):
                ratio = ""
            elif self.ratio >= 1:
                ratio = f" ({self.ratio:.1f}x {self.basis})"
            else:
                ratio = f" ({100 * self.ratio:.0f}% of {self.basis})"
            return f"{self.metric} leak{growth}{ratio}"
        return f"{self.metric} {self.ratio:.2f}x {self.basis}"


def _leak_severity(row: Mapping[str, Any]) -> tuple[float, str]:
    growth, budget = finite(row.get("total_growth")), finite(row.get("growth_budget"))
    if growth is not None and budget:
        return growth / budget, "budget"
    slope, threshold = finite(row.get("slope")), finite(row.get("threshold"))
    if slope is not None and threshold:
        return slope / threshold, "threshold"
    return (math.inf if (growth or 0.0) > 0 else 0.0), "budget"


def worst_metric(findings: Sequence[Mapping[str, Any]]) -> WorstMetric | None:
    """The leaking finding with the largest growth relative to its budget; without a leak,
    the finding with the largest slope/threshold ratio; None without findings to rank.
    """
    leaks = [f for f in findings if f.get("verdict") == "leak"]
    if leaks:
        ranked = []
        for row in leaks:
            ratio, basis = _leak_severity(row)
            growth = finite(row.get("total_growth"))
            ranked.append((ratio, growth or 0.0, row["metric"], basis, growth))
        ratio, _, metric, basis, growth = max(ranked, key=lambda r: (r[0], r[1], r[2]))
        return WorstMetric(metric, "leak", ratio, basis, growth)
    best = None
    for row in findings:
        slope, threshold = finite(row.get("slope")), finite(row.get("threshold"))
        if slope is None or not threshold:
            continue
        candidate = (slope / threshold, row["metric"], row.get("verdict") or "")
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    if best is None:
        return None
    return WorstMetric(best[1], best[2], best[0], "threshold", None)


@dataclass(frozen=True)
class RunSummary:
    """One line of ``soak runs``: times are epoch seconds, ``status`` is the shown one."""

    id: int
    started_at: float
    profile: str
    matrix: str | None
    cell: dict[str, Any]
    status: str
    stored_status: str
    abandoned_reason: str
    verdict: str | None
    duration_s: float | None
    iterations_done: int | None
    iterations_planned: int | None
    worst: WorstMetric | None


def list_runs(
    db: sqlite_utils.Database,
    limit: int = 20,
    profile: str | None = None,
    status: str | None = None,
    now: float | None = None,
) -> list[RunSummary]:
    """Newest runs first. ``status`` filters on the shown status ('abandoned' included);
    ``limit`` 0 means all.
    """
    now = time.time() if now is None else now
    where, args = [], []
    if profile:
        where.append("profile = ?")
        args.append(profile)
    if status:
        where.append("status = ?")
        args.append("running" if status == "abandoned" else status)
    sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY id DESC"
    # 'running' and 'abandoned' are told apart only after reading, so no SQL limit then.
    if limit and status not in ("running", "abandoned"):
        sql += f" LIMIT {int(limit)}"
    runs = list(db.query(sql, args))
    walls = median_walls(db, [r["id"] for r in runs if r["status"] == "running"])
    findings: dict[int, list[dict[str, Any]]] = {}
    if runs:
        marks = ", ".join("?" for _ in runs)
        for row in db.query(
            # allocation sites (attribution) explain a metric; they are never a run's worst
            f"SELECT * FROM findings WHERE run_id IN ({marks}) AND kind IS NOT 'site'",
            [r["id"] for r in runs],
        ):
            findings.setdefault(row["run_id"], []).append(row)
    here = socket.gethostname()
    out = []
    for run in runs:
        shown, reason = display_status(run, walls.get(run["id"]), now, here)
        if status and shown != status:
            continue
        out.append(
            RunSummary(
                id=run["id"],
                started_at=run["started_at"],
                profile=run["profile"],
                matrix=run.get("matrix"),
                cell=parse_cell(run.get("cell")),
                status=shown,
                stored_status=run["status"],
                abandoned_reason=reason,
                verdict=run.get("verdict"),
                duration_s=run_duration(run, now),
                iterations_done=run.get("iterations_done"),
                iterations_planned=run.get("iterations_planned"),
                worst=worst_metric(findings.get(run["id"], [])),
            )
        )
        if limit and len(out) >= limit:
            break
    return out
