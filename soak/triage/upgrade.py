"""`soak compare --upgrade OLD NEW`: a matrix run on two Triton versions, cell by cell.

Cells that differ only in `triton` are lined up (OLD's with NEW's); each pair's metrics are
judged per unit by :mod:`soak.analysis.upgrade`, on the slopes `soak compare` computes
(:func:`soak.triage.compare.run_slopes`), and each side's status and failures are read, so
that a crash, hang or failure the newer version brings is named. Reads only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from soak.analysis.upgrade import (
    ITERATION,
    UPGRADE_RULE,
    UnitSlope,
    mean_count,
    per_unit,
    unit_threshold,
    upgrade_verdict,
)
from soak.errors import ExitCode, StoreError
from soak.formatting import finite
from soak.run_analysis import rules_for
from soak.store import load_series, run_row
from soak.triage.compare import matrix_runs, run_slopes
from soak.triage.lookup import parse_cell

#: Statuses that say the software under test went wrong (not the verdict on memory).
BAD_STATUSES = ("failed", "crashed", "hung")


@dataclass(frozen=True)
class UnitComparison:
    """One metric per one unit on both versions; ``threshold`` in metric units per unit."""

    metric: str
    unit: str
    old: UnitSlope
    new: UnitSlope
    threshold: float
    verdict: str

    @property
    def difference(self) -> float | None:
        return finite(self.new.slope - self.old.slope)


@dataclass(frozen=True)
class Side:
    """One version's run of a cell: what happened to it."""

    run_id: int | None  # None: the cell never ran on this version
    status: str
    iterations_done: int
    failures: int  # failure events (unexpected errors, timeouts) over the whole run
    triton_version: str | None
    triton_home: str | None
    reason: str
    first_failure: str | None = None  # the first failure event's message, when there is one

    @property
    def ran(self) -> bool:
        return self.run_id is not None and self.iterations_done > 0


@dataclass(frozen=True)
class CellUpgrade:
    cell: dict[str, Any]  # the cell without `triton`
    old: Side
    new: Side
    metrics: list[UnitComparison]

    @property
    def new_problems(self) -> list[str]:
        """What the newer version does that the older did not: a failure, hang or crash."""
        found = []
        if self.new.status in BAD_STATUSES and self.old.status not in BAD_STATUSES:
            found.append(f"{self.new.status} on the newer version: {self.new.reason}")
        if self.new.failures and not self.old.failures:
            first = f" (first: {self.new.first_failure})" if self.new.first_failure else ""
            found.append(f"{self.new.failures} failure(s) on the newer version, none before{first}")
        return found

    @property
    def regressed(self) -> bool:
        return bool(self.new_problems) or any(m.verdict == "worse" for m in self.metrics)


@dataclass(frozen=True)
class Upgrade:
    """What `soak compare --upgrade` prints and what its exit code says."""

    matrix: str
    old: str
    new: str
    cells: list[CellUpgrade]
    ignored: list[dict[str, Any]] = field(default_factory=list)  # cells on other versions

    @property
    def exit_code(self) -> ExitCode:
        """2 when a side of some cell never ran, 1 when the newer version regresses, else 0."""
        if any(not c.old.ran or not c.new.ran for c in self.cells):
            return ExitCode.FAILED
        return ExitCode.LEAK if any(c.regressed for c in self.cells) else ExitCode.PASSED

    def as_dict(self) -> dict[str, Any]:
        def side(s: Side) -> dict[str, Any]:
            return {
                "run": s.run_id,
                "status": s.status,
                "iterations_done": s.iterations_done,
                "failures": s.failures,
                "triton_version": s.triton_version,
                "triton_home": s.triton_home,
                "reason": s.reason,
                "first_failure": s.first_failure,
            }

        def slope(u: UnitSlope) -> dict[str, float | None]:
            return {"slope": finite(u.slope), "low": finite(u.low), "high": finite(u.high)}

        return {
            "matrix": self.matrix,
            "old": self.old,
            "new": self.new,
            "rule": UPGRADE_RULE,
            "exit_code": int(self.exit_code),
            "cells": [
                {
                    "cell": c.cell,
                    "old": side(c.old),
                    "new": side(c.new),
                    "new_problems": c.new_problems,
                    "metrics": [
                        {
                            "metric": m.metric,
                            "unit": m.unit,
                            "old": slope(m.old),
                            "new": slope(m.new),
                            "difference": m.difference,
                            "threshold": finite(m.threshold),
                            "verdict": m.verdict,
                        }
                        for m in c.metrics
                    ],
                }
                for c in self.cells
            ],
            "ignored": self.ignored,
        }


def _same_version(cell_value: Any, asked: str) -> bool:
    def normal(v: str) -> str:
        v = str(v).strip()
        return f"{v}.0" if v.count(".") == 1 else v

    return cell_value is not None and normal(cell_value) == normal(asked)


def latest_upgrade_matrix(db: sqlite_utils.Database, old: str, new: str) -> str:
    """The newest matrix with cells on both versions (for `--upgrade OLD NEW` alone)."""
    rows = db.execute(
        "SELECT matrix, cell FROM runs WHERE matrix IS NOT NULL ORDER BY id DESC"
    ).fetchall()
    seen: dict[str, set[str]] = {}
    for name, cell in rows:
        value = parse_cell(cell).get("triton")
        if value is None:
            continue
        seen.setdefault(name, set()).add(str(value))
        versions = seen[name]
        if any(_same_version(v, old) for v in versions) and any(
            _same_version(v, new) for v in versions
        ):
            return name
    raise StoreError(
        f"no matrix in this database has cells on Triton {old} and {new}; run one with "
        f"soak run PROFILE --triton {old} --triton {new}"
    )


def _side(db: sqlite_utils.Database, run_id: int | None) -> Side:
    if run_id is None:
        return Side(None, "never ran", 0, 0, None, None, "no run of this cell")
    row = run_row(db, run_id)
    failures, first = db.execute(
        "SELECT count(*), (SELECT message FROM events WHERE run_id = ?1 AND kind = 'failure' "
        "ORDER BY id LIMIT 1) FROM events WHERE run_id = ?1 AND kind = 'failure'",
        [run_id],
    ).fetchone()
    return Side(
        run_id,
        row["status"],
        int(row["iterations_done"] or 0),
        int(failures),
        row.get("triton_version"),
        row.get("triton_home"),
        row.get("reason") or "",
        first,
    )


def _unit_counts(db: sqlite_utils.Database, run_id: int, metric: str) -> dict[str, Any]:
    return dict(load_series(db, run_id, [metric])[metric].units)


def _metrics(db: sqlite_utils.Database, old_run: int, new_run: int) -> list[UnitComparison]:
    """Every judged metric per iteration and per unit that both runs count."""
    old_slopes, _ = run_slopes(db, old_run)
    new_slopes, _ = run_slopes(db, new_run)
    rules = {r.metric: r for r in rules_for(run_row(db, old_run))[0]}
    any_metric = next(iter(old_slopes), None)
    if any_metric is None:
        return []
    old_units = _unit_counts(db, old_run, any_metric)
    new_units = _unit_counts(db, new_run, any_metric)
    out = []
    for metric, old in old_slopes.items():
        new = new_slopes.get(metric)
        if new is None or not (old.usable and new.usable):
            continue
        rule = rules.get(metric)
        units = [ITERATION] + [u for u in old_units if u in new_units]
        for unit in units:
            if unit == ITERATION:
                old_count = new_count = 1.0
            else:
                old_count = mean_count(old_units[unit], old.warmup_cut)
                new_count = mean_count(new_units[unit], new.warmup_cut)
                if not (old_count > 0 and new_count > 0):  # the unit is not this cell's work
                    continue
            o = per_unit(old.slope, old.low, old.high, old_count)
            n = per_unit(new.slope, new.low, new.high, new_count)
            threshold = unit_threshold(
                unit,
                rule.slope_per_iteration if rule else None,
                dict(rule.slope_per_unit) if rule else {},
                old_count,
            )
            out.append(
                UnitComparison(metric, unit, o, n, threshold, upgrade_verdict(o, n, threshold))
            )
    return out


def upgrade(db: sqlite_utils.Database, old: str, new: str, matrix: str | None = None) -> Upgrade:
    """Line up the cells of ``matrix`` (NAME or NAME@RUN; None: the newest matrix with both
    versions) that differ only in `triton` (OLD vs NEW) and compare each pair."""
    if _same_version(old, new):
        raise StoreError(f"--upgrade names {old} twice; give the older and the newer version")
    name = matrix or latest_upgrade_matrix(db, old, new)
    cells = matrix_runs(db, name)
    olds: dict[str, int] = {}
    news: dict[str, int] = {}
    ignored = []
    for key, run_id in cells.items():
        cell = json.loads(key)
        value = cell.pop("triton", None)
        rest = json.dumps(cell, sort_keys=True)
        if _same_version(value, old):
            olds[rest] = run_id
        elif _same_version(value, new):
            news[rest] = run_id
        else:
            ignored.append(json.loads(key))
    if not olds and not news:
        have = sorted({str(json.loads(k).get("triton")) for k in cells})
        raise StoreError(
            f"matrix {name.partition('@')[0]} has no cell on Triton {old} or {new} "
            f"(its triton values: {', '.join(have)})"
        )
    pairs = []
    order = list(olds) + [k for k in news if k not in olds]
    for rest in order:
        old_run, new_run = olds.get(rest), news.get(rest)
        old_side, new_side = _side(db, old_run), _side(db, new_run)
        metrics = _metrics(db, old_run, new_run) if old_side.ran and new_side.ran else []
        pairs.append(CellUpgrade(json.loads(rest), old_side, new_side, metrics))
    return Upgrade(name, old, new, pairs, ignored)
