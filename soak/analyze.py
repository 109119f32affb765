"""Between the store and the analysis: read a run's quiet-point series, judge, store findings.

The statistics live in `soak.analysis` and never see SQL; this module never sees Triton.
Thresholds come from the profile text stored with the run, so `soak analyze` re-judges a run
exactly as `soak run` did.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import sqlite_utils

from soak import profile as profiles
from soak.analysis.verdict import Finding, MetricRule, Series, judge, overall
from soak.errors import SoakError, StoreError

log = logging.getLogger(__name__)

UNIT_COLUMNS = {
    "server": "server_lifecycles",
    "model_load": "model_loads",
    "failed_load": "failed_loads",
    "inference": "inferences",
    "error": "errors",
}
EXIT_OF_VERDICT = {"pass": 0, "leak": 1, "inconclusive": 3}
VERDICT_STATUS = {"pass": "passed", "leak": "leaked", "inconclusive": "inconclusive"}
# Precedence of exit codes across runs or cells: a failure outranks a leak, a leak outranks
# an inconclusive result, which outranks a pass.
EXIT_RANK = {2: 3, 1: 2, 3: 1, 0: 0}


@dataclass(frozen=True)
class RunAnalysis:
    run_id: int
    status: str  # the run's status after the analysis
    verdict: str  # "pass" | "leak" | "inconclusive"
    exit_code: int
    findings: list[Finding]
    warmup: int


def worst_exit(codes: list[int]) -> int:
    return max(codes, key=lambda c: EXIT_RANK.get(c, 3), default=2)


def latest_run_id(db: sqlite_utils.Database) -> int:
    row = db.execute("SELECT max(id) FROM runs").fetchone()
    if row is None or row[0] is None:
        raise StoreError("the database holds no runs yet")
    return int(row[0])


def run_row(db: sqlite_utils.Database, run_id: int) -> dict[str, Any]:
    rows = list(db.query("SELECT * FROM runs WHERE id = ?", [run_id]))
    if not rows:
        last = db.execute("SELECT max(id) FROM runs").fetchone()[0]
        raise StoreError(
            f"no run {run_id} in this database"
            + (f" (runs go up to {last})" if last is not None else " (it holds no runs)")
        )
    return rows[0]


def rules_for(run: dict[str, Any]) -> tuple[list[MetricRule], int]:
    """Rules and warm-up from the profile stored with the run."""
    try:
        prof = profiles.parse(run["profile_text"] or "", run["profile_source"] or "<stored>")
        thresholds = prof.thresholds
    except SoakError:
        thresholds = profiles.default_thresholds()
    config = json.loads(run["config"] or "{}")
    warmup = int(config.get("run", {}).get("warmup", 1))
    rules = [
        MetricRule(
            t.metric, t.kind, t.slope_per_iteration, t.growth_budget, t.tolerance, t.slope_per_unit
        )
        for t in thresholds.values()
        if t.enabled
    ]
    return rules, warmup


#: Rows fetched at a time: bounds the Python objects alive at once (a row is a tuple of ints).
LOAD_CHUNK = 4096


def load_series(db: sqlite_utils.Database, run_id: int, metrics: list[str]) -> dict[str, Series]:
    """Every metric's quiet-point series of a run, in iteration order; NULL becomes NaN.

    Fetching is the cost here (~100 ns per value, mostly Python objects), so the rows come
    in chunks, each turned into a float array by numpy at once (None becomes NaN), and a
    column that holds one value throughout (a counter that never moved, a GPU metric that
    is NULL on a machine without one) is not fetched row by row: if it is constant over the
    first chunk, one SQL pass checks the rest and, if it holds, it is filled in with numpy.
    """
    stored = {row[1] for row in db.execute("PRAGMA table_info(iterations)").fetchall()}
    # A database written before a unit existed has no column for it: no count, NULL.
    units = [f"i.{c}" if c in stored else "NULL" for c in UNIT_COLUMNS.values()]
    columns = ["s.iteration", *(f"s.{m}" for m in metrics), *units]
    source = (
        "FROM samples s "
        "LEFT JOIN iterations i ON i.run_id = s.run_id AND i.iteration = s.iteration "
        "WHERE s.run_id = ? AND s.kind = 'quiet'"
    )
    cursor = db.execute(f"SELECT {', '.join(columns)} {source} ORDER BY s.iteration", [run_id])
    first = cursor.fetchmany(LOAD_CHUNK)
    data = _float_rows(first, len(columns))
    if len(first) == LOAD_CHUNK:  # there may be more
        constant = {
            k: first[0][k]
            for k in range(1, len(columns))
            if all(row[k] == first[0][k] for row in first)  # None == None holds too
        }
        if constant and _still_constant(db, source, run_id, columns, constant):
            cursor.close()
            varying = [k for k in range(len(columns)) if k not in constant]
            cursor = db.execute(
                f"SELECT {', '.join(columns[k] for k in varying)} {source} ORDER BY s.iteration",
                [run_id],
            )
            fetched = _fetch_floats(cursor, len(varying))
            data = np.empty((fetched.shape[0], len(columns)))
            data[:, varying] = fetched
            for k, value in constant.items():
                data[:, k] = math.nan if value is None else value
        else:
            data = np.concatenate([data, _fetch_floats(cursor, len(columns))])
    # One contiguous array per column: Series would otherwise copy each strided column.
    by_column = np.ascontiguousarray(data.T)
    iterations = by_column[0].astype(int)
    unit_data = {name: by_column[1 + len(metrics) + k] for k, name in enumerate(UNIT_COLUMNS)}
    return {m: Series(m, iterations, by_column[1 + k], unit_data) for k, m in enumerate(metrics)}


def _float_rows(rows: list[tuple], width: int) -> np.ndarray:
    """Rows of SQL values as a float array, NULL as NaN (numpy converts None to NaN)."""
    return np.array(rows, dtype=float) if rows else np.empty((0, width))


def _fetch_floats(cursor: Any, width: int) -> np.ndarray:
    parts = [np.empty((0, width))]
    while rows := cursor.fetchmany(LOAD_CHUNK):
        parts.append(_float_rows(rows, width))
    return np.concatenate(parts)


def _still_constant(
    db: sqlite_utils.Database, source: str, run_id: int, columns: list[str], constant: dict
) -> bool:
    """True when no row has another value than ``constant[k]`` in column k (NULL-safe)."""
    differs = " OR ".join(f"{columns[k]} IS NOT ?" for k in constant)
    row = db.execute(
        f"SELECT EXISTS (SELECT 1 {source} AND ({differs}))", [run_id, *constant.values()]
    ).fetchone()
    return not row[0]


def analyze_run(db: sqlite_utils.Database, run_id: int) -> RunAnalysis:
    """Judge every metric of a run; decides the status of a run that ran to its end."""
    run = run_row(db, run_id)
    rules, warmup = rules_for(run)
    series = load_series(db, run_id, [r.metric for r in rules])
    findings = [judge(series[r.metric], r, warmup) for r in rules]
    order = {"leak": 0, "inconclusive": 1, "pass": 2, "no_data": 3}
    findings.sort(key=lambda f: (order.get(f.verdict, 4), f.metric))
    verdict = overall(findings)
    status = run["status"]
    if status in ("passed", "leaked", "inconclusive"):
        status = VERDICT_STATUS[verdict]
        code = EXIT_OF_VERDICT[verdict]
    elif status == "interrupted":
        # Cut short: a leak is still a leak, but a pass proves nothing.
        code = 1 if verdict == "leak" else 3
    elif status == "running":  # still going, or abandoned by a killed supervisor
        code = EXIT_OF_VERDICT[verdict]
    else:
        code = 2
    return RunAnalysis(run_id, status, verdict, code, findings, warmup)


def finding_row(f: Finding) -> dict[str, Any]:
    row = asdict(f)
    row["slopes_per_unit"] = json.dumps(
        {k: (v if math.isfinite(v) else None) for k, v in row["slopes_per_unit"].items()}
    )
    row["analyzed_at"] = time.time()
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            row[key] = None
    return row
