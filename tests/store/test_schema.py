"""soak.store.schema: databases made by earlier soaks are migrated forward, old rows intact."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from soak.store import (
    SCHEMA_VERSION,
    TABLES,
    Store,
    latest_run_id,
    load_series,
    load_site_series,
    run_row,
)
from soak.store.rows import phase_rows
from soak.store.schema import EVENT_COLUMNS
from tests.store.old_schemas import SCHEMAS, OldSchema, full_row


def test_a_database_made_before_ray_cells_gets_the_node_column(tmp_path: Path):
    path = tmp_path / "old.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE runs DROP COLUMN ray_node_id")  # as soak made it before Ray
    conn.execute("INSERT INTO runs (profile, status, started_at) VALUES ('old', 'passed', 1.0)")
    conn.commit()
    conn.close()
    store = Store(path)
    assert "ray_node_id" in store.db["runs"].columns_dict
    assert [r["profile"] for r in store.db.query("SELECT profile FROM runs")] == ["old"]
    store.close()


# -- databases made by earlier soaks (tests/data/store_schemas, made by tests.store.old_schemas)


def _rows(db: sqlite_utils.Database) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, in rowid order, and of the events view (in id order)."""
    rows = {t: list(db.query(f"SELECT * FROM [{t}] ORDER BY rowid")) for t in db.table_names()}
    for view in db.view_names():
        rows[view] = list(db.query(f"SELECT * FROM [{view}] ORDER BY id"))
    return rows


def _shape(db: sqlite_utils.Database) -> tuple[dict[str, dict[str, Any]], set[tuple]]:
    """Each table's columns and types, every view's, and every index (table, columns)."""
    tables = {t: db[t].columns_dict for t in db.table_names()}
    views = {v: db[v].columns_dict for v in db.view_names()}
    indexes = {(t, tuple(i.columns)) for t in tables for i in db[t].indexes}
    return {**tables, **views}, indexes


def _full(table: str, k: int, *leave_out: str, **fixed: Any) -> dict[str, Any]:
    """A row giving every column of today's ``table`` a value, but those left out."""
    all_columns = EVENT_COLUMNS if table == "events" else TABLES[table].columns
    columns = {c: t for c, t in all_columns.items() if c not in leave_out}
    return full_row(columns, k, **fixed)


def _write_full_run(store: Store) -> tuple[int, dict[str, list[dict[str, Any]]]]:
    """A run through every write of the store, every column of every table given a value; the
    run's id and the rows as they should read back (ids aside)."""
    run = _full("runs", 7, "id", profile="new", status="passed")
    run_id = store.create_run(run)
    stored_through_events = ("meta", "messages", "event_rows")
    written: dict[str, list[dict[str, Any]]] = {
        t: [] for t in (*TABLES, "events") if t not in stored_through_events
    }
    for i in range(2):
        iteration = _full("iterations", 7 + i, "run_id", iteration=i)
        gpu = _full("gpu_samples", 7 + i, "sample_id", device=0)
        sample = _full("samples", 7 + i, "id", "run_id", iteration=i, kind="quiet")
        heap = _full("heap_types", 7 + i, "run_id", iteration=i)
        ev = _full("events", 7 + i, "id", "run_id", iteration=i)
        server = _full("server_samples", 7 + i, "run_id", "iteration", server=0)
        store.write_iteration(
            run_id, iteration, [{**sample, "gpu_devices": [gpu]}], [heap], [ev], [server]
        )
        written["server_samples"].append(server)
        written["iterations"].append(iteration)
        written["samples"].append(sample)
        written["gpu_samples"].append(gpu)
        written["heap_types"].append(heap)
        written["events"].append(ev)
    interval = _full("samples", 9, "id", "run_id", iteration=2, kind="interval")
    store.add_interval_samples(run_id, [interval])
    written["phase_samples"] += phase_rows([interval])
    crash = _full("events", 9, "id", "run_id", iteration=2, kind="crash")
    store.add_events(run_id, [crash])
    written["events"].append(crash)
    site = _full("sites", 7, "run_id", site_id=3)
    site_samples = [_full("site_samples", 7 + i, "run_id", site_id=3, iteration=i) for i in (0, 1)]
    store.write_sites(run_id, [{**site, "frames": ["a", "b"]}], site_samples)
    written["sites"].append({**site, "frames": '["a", "b"]'})
    written["site_samples"] += site_samples
    finding = _full("findings", 7, "run_id", metric="rss_bytes", slopes_per_unit="{}")
    store.write_findings(run_id, [finding])
    written["findings"].append(finding)
    # each iteration moves iterations_done and the heartbeat on (a time: not compared)
    written["runs"].append({**run, "iterations_done": 2, "heartbeat_at": None})
    return run_id, written


@pytest.mark.parametrize("schema", SCHEMAS, ids=[s.name for s in SCHEMAS])
def test_a_database_of_an_earlier_schema_takes_a_full_run_and_keeps_its_rows(
    tmp_path: Path, schema: OldSchema
):
    path = tmp_path / "old.db"
    shutil.copyfile(schema.path, path)
    before = _rows(sqlite_utils.Database(path))
    assert before["runs"][0]["profile"] == "old" and len(before["samples"]) == 2
    today = Store(tmp_path / "today.db")

    store = Store(path)
    assert _shape(store.db) == _shape(today.db)  # every table, column and index of today's
    run_id, written = _write_full_run(store)

    after = _rows(store.db)
    for table, rows in before.items():
        if table == "meta":
            continue  # the version moves on: checked below
        kept = after[table][: len(rows)]
        assert [{c: r[c] for c in rows[0]} for r in kept] == rows, table
        added = set(after[table][0]) - set(rows[0])  # columns that came with the migration
        assert all(r[c] is None for r in kept for c in added), table
    assert after["meta"] == [{"key": "schema_version", "value": str(SCHEMA_VERSION)}]
    for table, rows in written.items():
        new = after[table][len(before.get(table, [])) :]
        ids = ("id", "run_id", "sample_id")
        want = [{c: v for c, v in row.items() if c not in ids and v is not None} for row in rows]
        assert [{c: r[c] for c in want[0]} for r in new] == want, table
    assert run_row(store.db, run_id)["profile"] == "new" and latest_run_id(store.db) == run_id
    series = load_series(store.db, run_id, ["rss_bytes"])["rss_bytes"]
    assert list(series.iterations) == [0, 1]
    assert list(series.values) == [s["rss_bytes"] for s in written["samples"][:2]]
    assert list(load_site_series(store.db, run_id)) == [3]
    old = load_series(store.db, 1, ["rss_bytes"])["rss_bytes"]
    assert list(old.values) == [s["rss_bytes"] for s in before["samples"]]
    store.close()
    today.close()


def test_a_migrated_database_opens_again_unchanged(tmp_path: Path):
    path = tmp_path / "old.db"
    shutil.copyfile(SCHEMAS[0].path, path)
    Store(path).close()
    once = _shape(sqlite_utils.Database(path)), _rows(sqlite_utils.Database(path))
    Store(path).close()
    assert (_shape(sqlite_utils.Database(path)), _rows(sqlite_utils.Database(path))) == once


def test_a_plain_events_table_moves_behind_the_view_with_its_ids_and_texts(tmp_path: Path):
    path = tmp_path / "old.db"
    shutil.copyfile(SCHEMAS[-1].path, path)
    conn = sqlite3.connect(path)
    for i, message in enumerate(["same", "same", None]):
        conn.execute(
            "INSERT INTO events (id, run_id, iteration, kind, message) VALUES (?, 1, ?, 'x', ?)",
            [100 + i, i, message],
        )
    conn.commit()
    before = list(sqlite_utils.Database(conn).query("SELECT * FROM events ORDER BY id"))
    conn.close()
    store = Store(path)
    assert "events" in store.db.view_names() and "events" not in store.db.table_names()
    assert list(store.db.query("SELECT * FROM events ORDER BY id")) == [
        {**r, "count": r.get("count"), "last_t": r.get("last_t")} for r in before
    ]
    texts = [r["text"] for r in store.db.query("SELECT text FROM messages")]
    assert texts.count("same") == 1 and None not in texts
    store.close()
