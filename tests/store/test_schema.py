"""soak.store.schema: databases made by earlier soaks are migrated forward, old rows intact."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from soak.store import Store


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
