"""`make bench` part: bytes of results database per iteration, per shipped profile and per
traffic behaviour, as the slope over iterations (the empty database's fixed size is not in it).

Each cell runs briefly into a database of its own; after every quiet point (the iteration's
transaction is committed by then) the database's page count and, from SQLite's `dbstat`
table, the bytes of each table's pages (indexes counted with their table) are read. The
slope of those over the iterations after the first is the cost of an iteration on disk. Rows
per iteration by table, and events and samples by kind, say what makes it.
"""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

#: Iterations of each cell, and how many first ones the slope leaves out (the first pays for
#: per-run rows written at its quiet point).
ITERATIONS = 6
SKIP = 1
GOAL_BYTES = 1024
#: The profile whose cells are traffic with every behaviour a profile may ask for.
BEHAVIOUR_PROFILE = "errors"


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs; None with fewer than two distinct xs."""
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} xs and {len(ys)} ys")
    if len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


@dataclass
class Snapshot:
    """The database after one iteration: its size and each table's pages and payload."""

    iteration: int
    file_bytes: int
    table_bytes: dict[str, int] = field(default_factory=dict)
    payload_bytes: int = 0


def snapshot(conn: sqlite3.Connection, iteration: int) -> Snapshot:
    """Read through the writer's own connection (it sees its WAL frames; a reader would too)."""
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (size,) = conn.execute("PRAGMA page_size").fetchone()
    rows = conn.execute(
        "SELECT m.tbl_name, sum(s.pgsize), sum(s.payload) FROM dbstat AS s "
        "JOIN sqlite_master AS m ON s.name = m.name GROUP BY m.tbl_name"
    ).fetchall()
    return Snapshot(
        iteration,
        pages * size,
        {name: int(b) for name, b, _ in rows},
        sum(int(p) for _, _, p in rows),
    )


def growth(snapshots: list[Snapshot], skip: int = SKIP) -> dict[str, Any]:
    """Bytes per iteration: of the file (pages), of the payload, and of each table whose pages
    grew; from the snapshots of iterations >= skip."""
    used = [s for s in snapshots if s.iteration >= skip]
    xs = [float(s.iteration) for s in used]
    tables: dict[str, float] = {}
    for name in sorted({t for s in used for t in s.table_bytes}):
        b = slope(xs, [float(s.table_bytes.get(name, 0)) for s in used])
        if b:
            tables[name] = b
    return {
        "iterations_used": len(used),
        "file_bytes_per_iteration": slope(xs, [float(s.file_bytes) for s in used]),
        "payload_bytes_per_iteration": slope(xs, [float(s.payload_bytes) for s in used]),
        "table_bytes_per_iteration": tables,
    }


def rows_per_iteration(conn: sqlite3.Connection, run_id: int, skip: int, iterations: int):
    """Rows per iteration of each table that has an iteration column, and of events and
    samples by kind (with the bytes of the events' messages), over iterations >= skip."""
    counted = max(1, iterations - skip)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    out: dict[str, Any] = {"tables": {}, "events": {}, "samples": {}}
    for table in tables:
        columns = {r[1] for r in conn.execute(f"PRAGMA table_info('{table}')")}
        if not {"iteration", "run_id"} <= columns:
            continue
        (n,) = conn.execute(
            f"SELECT count(*) FROM '{table}' WHERE run_id = ? AND iteration >= ?", [run_id, skip]
        ).fetchone()
        if n:
            out["tables"][table] = n / counted
    for kind, n, chars in conn.execute(
        "SELECT kind, count(*), sum(length(message)) FROM events "
        "WHERE run_id = ? AND iteration >= ? GROUP BY kind",
        [run_id, skip],
    ):
        out["events"][kind] = {"rows": n / counted, "message_bytes": (chars or 0) / counted}
    for kind, n in conn.execute(
        "SELECT kind, count(*) FROM samples WHERE run_id = ? AND iteration >= ? GROUP BY kind",
        [run_id, skip],
    ):
        out["samples"][kind] = n / counted
    return out


def cells(all_cells: bool = False) -> list[tuple[str, Any]]:
    """(label, profile) of each cell measured: every shipped profile's first cell (all of them
    with `all_cells`), and every cell of BEHAVIOUR_PROFILE: its matrix is traffic with each
    behaviour traffic allows (init_raises is refused with traffic)."""
    from soak import profile as profiles

    out: list[tuple[str, Any]] = []
    for name in profiles.shipped_names():
        found = profiles.load(name).cells()
        for cell in found if all_cells or name == BEHAVIOUR_PROFILE else found[:1]:
            tag = ", ".join(f"{k}={v}" for k, v in (cell.cell or {}).items())
            out.append((f"{name} ({tag})" if tag else name, cell))
    return out


def measure_cell(prof: Any, iterations: int = ITERATIONS, skip: int = SKIP) -> dict[str, Any]:
    """Run one cell for `iterations` into a fresh database; its growth and rows, or why it
    could not run (a GPU cell on a machine without one)."""
    from soak.errors import SoakError
    from soak.runner import session

    prof = replace(prof, run={**prof.run, "warmup": min(prof.run["warmup"], skip)})
    prof = prof.with_overrides(iterations=iterations)
    with tempfile.TemporaryDirectory(prefix="soak-bench-db-") as tmp:
        try:
            store = session.prepare(prof, Path(tmp) / "bench.db")
        except SoakError as exc:
            return {"skipped": str(exc).splitlines()[0]}
        try:
            shots: list[Snapshot] = []
            (outcome,) = session.run(
                prof, store, on_iteration=lambda v: shots.append(snapshot(store.conn, v.iteration))
            )
            result = growth(shots, skip)
            result["status"] = outcome.status
            result["rows_per_iteration"] = rows_per_iteration(
                store.conn, outcome.run_id, skip, len(shots)
            )
        finally:
            store.close()
    return result


def store_growth(
    all_cells: bool = False, iterations: int = ITERATIONS, only: str | None = None
) -> dict[str, Any]:
    """Every cell of `cells` (those whose label contains `only`, if given)."""
    out: dict[str, Any] = {"iterations": iterations, "skip": SKIP, "cells": {}}
    for label, prof in cells(all_cells):
        if only is None or only in label:
            out["cells"][label] = measure_cell(prof, iterations)
    return out


def table_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """One row per cell: file and payload bytes per iteration against the goal, and for a cell
    above the goal the tables and kinds that make it."""
    rows = []
    for label, c in r["cells"].items():
        key = f"db bytes/iteration, {label}"
        if "skipped" in c:
            rows.append((key, f"skipped: {c['skipped'][:90]}"))
            continue
        file_b, payload = c["file_bytes_per_iteration"], c["payload_bytes_per_iteration"]
        if file_b is None:
            rows.append((key, f"no slope ({c['iterations_used']} iterations, {c['status']})"))
            continue
        judged = per_iteration(c)
        mark = "ok" if judged <= GOAL_BYTES else "over"
        text = f"{file_b:,.0f} (payload {payload:,.0f}; goal <= {GOAL_BYTES:,}: {mark})"
        if c.get("status") not in (None, "passed"):
            text += f" [{c['status']}]"
        rows.append((key, text))
        if judged > GOAL_BYTES:
            rows.append(("  made of", _made_of(c)))
    return rows


def per_iteration(c: dict[str, Any]) -> float:
    """The figure judged against the goal: the larger of the file's slope (whole pages, so
    0 or a page over a few iterations when little is written) and the payload's (rows only)."""
    return max(c["file_bytes_per_iteration"] or 0.0, c["payload_bytes_per_iteration"] or 0.0)


def _made_of(c: dict[str, Any]) -> str:
    tables = sorted(c["table_bytes_per_iteration"].items(), key=lambda kv: -kv[1])
    parts = [f"{t} {b:,.0f} B" for t, b in tables[:3]]
    rows = c.get("rows_per_iteration", {})
    samples = ", ".join(f"{k} {n:.1f}" for k, n in rows.get("samples", {}).items())
    events = ", ".join(f"{k} {e['rows']:.1f}" for k, e in rows.get("events", {}).items())
    text = "; ".join(parts)
    if samples:
        text += f"; samples/iteration: {samples}"
    if events:
        text += f"; events/iteration: {events}"
    return text
