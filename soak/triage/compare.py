"""`soak compare`: two runs or two matrices, metric by metric, under one significance rule.

The statistics (the widened Theil-Sen interval) are in :mod:`soak.analysis.compare`; this
module reads the runs and pairs them up."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from soak.analysis.compare import slope_after
from soak.analysis.verdict import warmup_cut
from soak.errors import StoreError
from soak.formatting import cell_label
from soak.profile.schema import MATRIX_KEYS
from soak.run_settings import measured_rules, rules_for
from soak.store import load_series, run_row
from soak.triage.lookup import matrix_names, no_matrix_error, parse_cell, resolve_run


@dataclass(frozen=True)
class SlopeSide:
    """One run's Theil-Sen slope per iteration with its autocorrelation-widened 95 % interval.

    ``variance_factor`` is the Hamed-Rao factor the interval was widened by (1: none);
    ``warmup_cut`` is the index of the first sample used.
    """

    run_id: int
    n: int
    slope: float
    low: float
    high: float
    variance_factor: float
    warmup_cut: int

    @property
    def usable(self) -> bool:
        return all(math.isfinite(v) for v in (self.slope, self.low, self.high))


@dataclass(frozen=True)
class MetricComparison:
    """Base vs candidate for one metric; ``verdict`` is worse, better, same or 'no data'."""

    metric: str
    kind: str
    base: SlopeSide | None
    candidate: SlopeSide | None
    difference: float | None
    significant: bool
    verdict: str


@dataclass(frozen=True)
class CellComparison:
    cell: dict[str, Any]
    base_run: int
    candidate_run: int
    metrics: list[MetricComparison]


@dataclass(frozen=True)
class Comparison:
    """What ``soak compare`` prints; unmatched cells are listed, never compared."""

    base: str
    candidate: str
    cells: list[CellComparison]
    base_only: list[dict[str, Any]] = field(default_factory=list)
    candidate_only: list[dict[str, Any]] = field(default_factory=list)


SIGNIFICANCE_RULE = (
    "Theil-Sen slope per iteration of the quiet samples after each run's warm-up, with Sen's "
    "95% interval widened by the Hamed-Rao autocorrelation factor; 'worse' when the "
    "candidate's interval lies wholly above the base's, 'better' when wholly below, else 'same'."
)


def run_slopes(
    db: sqlite_utils.Database, run_id: int
) -> tuple[dict[str, SlopeSide], dict[str, str]]:
    """Every judged metric's slope for one run, and each metric's kind (memory/counter).

    Each series is cut where the verdict cut it: at the stored finding's warm-up cut, or, for
    a run not judged yet, where ``verdict.judge`` would cut it (``verdict.warmup_cut``: the
    numbers, no rule), so compare and the verdict always look at the same samples. The
    slope's interval is widened for autocorrelation (:func:`soak.analysis.compare.widened_slope`).
    """
    run = run_row(db, run_id)
    rules, warmup = rules_for(run)
    series = load_series(db, run_id, [r.metric for r in rules])
    rules = measured_rules(rules, series)
    cuts = {
        row["metric"]: row["warmup_cut"]
        for row in db.query("SELECT metric, warmup_cut FROM findings WHERE run_id = ?", [run_id])
        if row["warmup_cut"] is not None
    }
    out: dict[str, SlopeSide] = {}
    kinds: dict[str, str] = {}
    for rule in rules:
        kinds[rule.metric] = rule.kind
        s = series[rule.metric]
        if rule.metric in cuts:
            cut = int(cuts[rule.metric])
        else:
            cut = warmup_cut(s, rule.kind, warmup)
        cut = min(max(cut, 0), s.values.size)
        n, slope, low, high, factor = slope_after(s.iterations, s.values, cut)
        out[rule.metric] = SlopeSide(run_id, n, slope, low, high, factor, cut)
    return out, kinds


def compare_sides(
    metric: str, kind: str, base: SlopeSide | None, candidate: SlopeSide | None
) -> MetricComparison:
    """The verdict of one metric under :data:`SIGNIFICANCE_RULE`."""
    if base is None or candidate is None or not base.usable or not candidate.usable:
        return MetricComparison(metric, kind, base, candidate, None, False, "no data")
    difference = candidate.slope - base.slope
    if candidate.low > base.high:
        verdict = "worse"
    elif candidate.high < base.low:
        verdict = "better"
    else:
        verdict = "same"
    return MetricComparison(metric, kind, base, candidate, difference, verdict != "same", verdict)


def _compare_runs_pair(
    db: sqlite_utils.Database, base: int, candidate: int, cell: dict[str, Any]
) -> CellComparison:
    base_slopes, base_kinds = run_slopes(db, base)
    cand_slopes, cand_kinds = run_slopes(db, candidate)
    kinds = {**cand_kinds, **base_kinds}
    metrics = list(base_slopes) + [m for m in cand_slopes if m not in base_slopes]
    return CellComparison(
        cell,
        base,
        candidate,
        [compare_sides(m, kinds[m], base_slopes.get(m), cand_slopes.get(m)) for m in metrics],
    )


def is_run_spec(spec: str) -> bool:
    """Whether a compare argument names a run (an id or 'latest') rather than a matrix."""
    return spec.strip().lower() == "latest" or re.fullmatch(r"\d+", spec.strip()) is not None


def matrix_runs(db: sqlite_utils.Database, spec: str) -> dict[str, int]:
    """The latest run of each cell of a matrix, by canonical cell JSON.

    ``NAME@N`` takes the matrix as it stood at run N (each cell's latest run with id <= N),
    so that two sessions of the same matrix (before and after a Triton upgrade) can be
    compared: ``soak compare nightly@120 nightly``.
    """
    name, _, upto = spec.partition("@")
    if upto and not re.fullmatch(r"\d+", upto):
        raise StoreError(f"{spec!r}: write a matrix as NAME or NAME@RUN_ID")
    sql, args = "SELECT id, cell FROM runs WHERE matrix = ?", [name]
    if upto:
        sql += " AND id <= ?"
        args.append(int(upto))
    rows = db.execute(sql + " ORDER BY id", args).fetchall()
    if not rows:
        if upto and name in matrix_names(db):
            raise StoreError(f"matrix {name!r} has no run up to run {upto}")
        raise no_matrix_error(db, name)
    cells: dict[str, int] = {}
    for run_id, cell in rows:
        cells[json.dumps(parse_cell(cell), sort_keys=True)] = run_id
    return cells


def _setup(brow: dict[str, Any], crow: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """What a same-name profile may still have changed between two runs: their slopes differ
    then for reasons other than the software under test."""

    def target(row: dict[str, Any]) -> Any:
        return json.loads(row.get("config") or "{}").get("run", {}).get("target")

    return {
        "scenario": (brow.get("scenario"), crow.get("scenario")),
        "behaviour": (brow.get("behaviour"), crow.get("behaviour")),
        "target": (target(brow), target(crow)),
    }


def compare(
    db: sqlite_utils.Database, base: str, candidate: str, force: bool = False
) -> Comparison:
    """Compare two runs (ids or 'latest') or two matrices (NAME or NAME@RUN), metric by metric.

    Runs of different profiles, or different cells of one matrix, are refused unless
    ``force``: their slopes differ for reasons other than the software under test.
    """
    base_is_run, cand_is_run = is_run_spec(base), is_run_spec(candidate)
    if base_is_run != cand_is_run:
        raise StoreError(
            f"compare two runs or two matrices, not a run and a matrix ({base!r}, {candidate!r})"
        )
    if base_is_run:
        b, c = resolve_run(db, base), resolve_run(db, candidate)
        if b == c:
            raise StoreError(f"base and candidate are the same run ({b})")
        brow, crow = run_row(db, b), run_row(db, c)
        bcell, ccell = parse_cell(brow.get("cell")), parse_cell(crow.get("cell"))
        if not force and brow["profile"] != crow["profile"]:
            raise StoreError(
                f"runs {b} and {c} ran different profiles ({brow['profile']}, "
                f"{crow['profile']}); pass --force to compare them anyway"
            )
        for key, (bval, cval) in _setup(brow, crow).items():
            if not force and bval != cval:
                raise StoreError(
                    f"runs {b} and {c} ran different {key}s ({bval}, {cval}) of profile "
                    f"{brow['profile']}; pass --force to compare them anyway"
                )
        if not force and bcell != ccell:
            raise StoreError(
                f"runs {b} and {c} are different cells ({cell_label(bcell, MATRIX_KEYS)} vs "
                f"{cell_label(ccell, MATRIX_KEYS)}); pass --force to compare them anyway"
            )
        return Comparison(f"run {b}", f"run {c}", [_compare_runs_pair(db, b, c, ccell)])
    bcells, ccells = matrix_runs(db, base), matrix_runs(db, candidate)
    bname, cname = base.partition("@")[0], candidate.partition("@")[0]
    if not force and bname != cname:
        raise StoreError(
            f"matrices {bname} and {cname} are different profiles; pass --force to compare "
            "them anyway"
        )
    if bcells == ccells:
        raise StoreError(
            f"{base} and {candidate} are the same runs; compare NAME@RUN (the matrix as it "
            "stood at run RUN) with NAME"
        )
    shared = [k for k in bcells if k in ccells]
    if not shared:
        raise StoreError(f"no cell of {base} matches a cell of {candidate}")
    cells = [_compare_runs_pair(db, bcells[k], ccells[k], json.loads(k)) for k in shared]
    return Comparison(
        base,
        candidate,
        cells,
        base_only=[json.loads(k) for k in bcells if k not in ccells],
        candidate_only=[json.loads(k) for k in ccells if k not in bcells],
    )
