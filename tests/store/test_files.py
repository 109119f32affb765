"""soak.store.files: foreign files are never changed; read-only results stay readable."""

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
from soak.store import Store, open_readonly
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


@pytest.mark.e2e
@pytest.mark.parametrize("command", [["run", "smoke", "--iterations", "2"], ["analyze"]])
def test_a_read_only_database_is_one_error_line_and_untouched(command: list[str]):
    """--db naming a file the user may read but not write: one `soak: error:` line naming
    the file, exit 2, the file byte for byte as it was (issue 24 item 7; root writes any
    file, so the command runs as nobody)."""
    base = Path(tempfile.mkdtemp(prefix="soak-ro-"))  # pytest's own tmp is private to root
    base.chmod(0o755)
    db = base / "soak.db"
    store = Store(db)
    store.create_run({"profile": "kept"})
    store.close()
    for p in base.iterdir():
        p.chmod(0o444)
    before = {p.name: p.read_bytes() for p in base.iterdir()}
    argv = _as_other_user([*SOAK_CLI, *command, "--no-progress", "--db", str(db)])
    if command[0] == "analyze":
        argv = argv and [a for a in argv if a != "--no-progress"]
    if argv is None:
        pytest.skip("running as root without setpriv: cannot make an unwritable file")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd="/")
        after = {p.name: p.read_bytes() for p in base.iterdir()}
    finally:
        shutil.rmtree(base)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert lines == [
        f"soak: error: {db}: cannot open for writing: attempt to write a readonly database"
    ]
    assert after == before
