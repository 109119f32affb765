"""The results database: foreign files are never changed; read-only results stay readable."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest

from soak.errors import StoreError
from soak.store import Store, event, export_run, open_readonly
from tests.e2e import SOAK_CLI


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _foreign(path: Path, wal: bool = False) -> None:
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, what TEXT)")
    conn.execute("INSERT INTO runs (what) VALUES ('another program')")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("wal", [False, True], ids=["rollback-journal", "wal"])
def test_a_foreign_database_is_refused_and_left_byte_for_byte(tmp_path: Path, wal: bool):
    db = tmp_path / "other.db"
    _foreign(db, wal)
    before = {p.name: _digest(p) for p in tmp_path.iterdir()}
    with pytest.raises(StoreError, match="not a soak results database"):
        Store(db)
    with pytest.raises(StoreError, match="not a soak results database"):
        open_readonly(db)
    assert {p.name: _digest(p) for p in tmp_path.iterdir()} == before


def test_an_empty_file_becomes_a_soak_database(tmp_path: Path):
    db = tmp_path / "new.db"
    db.touch()
    Store(db).close()
    open_readonly(db).conn.close()


def _as_other_user(argv: list[str]) -> list[str] | None:
    """argv run as a user who cannot write the test's folder (root ignores file modes)."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv]


@pytest.mark.e2e
def test_results_in_a_folder_nobody_may_write_are_readable():
    base = Path(tempfile.mkdtemp(prefix="soak-ro-"))  # pytest's own tmp is private to root
    base.chmod(0o755)
    folder = base / "artifacts"
    folder.mkdir()
    db = folder / "soak.db"
    store = Store(db)
    store.create_run({"profile": "ci-artifact"})
    store.close()  # WAL mode: reading it normally needs a -shm file beside it
    for p in folder.iterdir():
        p.chmod(0o444)
    folder.chmod(0o555)
    argv = _as_other_user([*SOAK_CLI, "runs", "--db", str(db), "--json"])
    if argv is None:
        pytest.skip("running as root without setpriv: cannot make an unwritable folder")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/")
    finally:
        folder.chmod(0o755)
        shutil.rmtree(base)
    assert proc.returncode == 0, proc.stderr
    assert '"profile": "ci-artifact"' in proc.stdout


def test_export_import_moves_every_row_under_new_ids(tmp_path):
    src = Store(tmp_path / "node.db")
    run = src.create_run({"profile": "p", "status": "running"})
    gpu = [{"device": 0, "name": "H100", "used_bytes": 5, "total_bytes": 9, "process_bytes": 1}]
    src.write_iteration(
        run,
        {"iteration": 0, "wall_s": 1.0},
        [{"iteration": 0, "kind": "quiet", "t": 1.0, "rss_bytes": 10, "gpu_devices": gpu}],
        [{"iteration": 0, "type_name": "dict", "count": 3, "increase": 1}],
        [event("failure", "boom", 0)],
    )
    dst = Store(tmp_path / "results.db")
    dst.create_run({"profile": "other", "status": "passed"})  # ids must not collide
    new = dst.import_run(export_run(src.db, run), {"ray_node_id": "n1", "host": "h1"})
    assert new == 2
    moved = export_run(dst.db, new)
    assert moved["runs"][0]["ray_node_id"] == "n1" and moved["runs"][0]["host"] == "h1"
    assert [s["rss_bytes"] for s in moved["samples"]] == [10]
    assert moved["gpu_samples"][0]["sample_id"] == moved["samples"][0]["id"]
    assert [e["message"] for e in moved["events"]] == ["boom"]
    assert len(moved["heap_types"]) == 1 and len(moved["iterations"]) == 1


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
