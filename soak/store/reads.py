"""Reads of stored runs: the latest id, a run's row, every row of a run (for an import
elsewhere), and the quiet-point series of its metrics and allocation sites, fetched in bulk."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import sqlite_utils

from soak.analysis.site_verdict import SiteSeries
from soak.analysis.verdict import Series
from soak.errors import StoreError
from soak.store.schema import LATER_UNITS, UNIT_COLUMNS


def export_run(db: sqlite_utils.Database, run_id: int) -> dict[str, list[dict[str, Any]]]:
    """Every stored row of one run, table by table, for `Store.import_run` elsewhere."""
    by_run = "run_id = ?"
    out: dict[str, list[dict[str, Any]]] = {
        "runs": list(db.query("SELECT * FROM runs WHERE id = ?", [run_id]))
    }
    for table in (
        "iterations",
        "samples",
        "heap_types",
        "events",
        "server_samples",
        "phase_samples",
    ):
        out[table] = list(db.query(f"SELECT * FROM {table} WHERE {by_run}", [run_id]))
    out["gpu_samples"] = list(
        db.query(
            "SELECT g.* FROM gpu_samples g JOIN samples s ON s.id = g.sample_id WHERE s.run_id = ?",
            [run_id],
        )
    )
    return out


def latest_run_id(db: sqlite_utils.Database) -> int:
    """The newest run's id; a clear error when the database holds none."""
    row = db.execute("SELECT max(id) FROM runs").fetchone()
    if row is None or row[0] is None:
        raise StoreError("the database holds no runs yet")
    return int(row[0])


def run_row(db: sqlite_utils.Database, run_id: int) -> dict[str, Any]:
    """The runs row of ``run_id``; the error names the id and the ids that exist."""
    rows = list(db.query("SELECT * FROM runs WHERE id = ?", [run_id]))
    if not rows:
        last = db.execute("SELECT max(id) FROM runs").fetchone()[0]
        raise StoreError(
            f"no run {run_id} in this database"
            + (f" (runs go up to {last})" if last is not None else " (it holds no runs)")
        )
    return rows[0]


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
    sampled = {row[1] for row in db.execute("PRAGMA table_info(samples)").fetchall()}
    values = [f"s.{m}" if m in sampled else "NULL" for m in metrics]  # a later metric: NULL
    columns = ["s.iteration", *values, *units]
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
    # A unit added later that the run never counted (NULL throughout: a run stored before the
    # unit existed) is no unit of this run; one counted as 0 stays (its slope is undefined).
    unit_data = {
        name: counts
        for name, counts in unit_data.items()
        if name not in LATER_UNITS or not np.isnan(counts).all()
    }
    return {m: Series(m, iterations, by_column[1 + k], unit_data) for k, m in enumerate(metrics)}


def load_site_series(db: sqlite_utils.Database, run_id: int) -> dict[int, SiteSeries]:
    """Every stored allocation-site series of a run (attribution), site 0 (the sum of all)
    included; {} for a run without, or a database from before attribution."""
    if not (db["sites"].exists() and db["site_samples"].exists()):
        return {}
    info = {
        r[0]: r[1:]
        for r in db.execute(
            "SELECT site_id, summary, thread, python_frame FROM sites WHERE run_id = ?", [run_id]
        )
    }
    rows = db.execute(
        "SELECT site_id, iteration, live_bytes, live_count FROM site_samples WHERE run_id = ? "
        "ORDER BY site_id, iteration",
        [run_id],
    ).fetchall()
    if not rows:
        return {}
    data = np.array(rows, dtype=float)
    out = {}
    for site in np.unique(data[:, 0]).astype(int):
        part = data[data[:, 0] == site]
        summary, thread, python_frame = info.get(site, ("all traced allocations", "all", None))
        out[int(site)] = SiteSeries(
            int(site), summary, thread, part[:, 1].astype(int), part[:, 2], part[:, 3], python_frame
        )
    return out


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
