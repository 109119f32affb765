"""Inspecting and opening existing results files: SQLite or not, soak's or not, which schema.

Nothing here writes: a file that is not a soak database of a schema this soak knows is refused
untouched, and a read-only open works in a folder we cannot write.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import sqlite_utils

from soak.errors import StoreError
from soak.store.schema import SCHEMA_VERSION

BUSY_TIMEOUT_S = 30.0
SQLITE_MAGIC = b"SQLite format 3\x00"


def connect(path: Path, readonly: bool, immutable: bool = False) -> sqlite3.Connection:
    """Writable, read-only (mode=ro) or immutable; waits up to BUSY_TIMEOUT_S on a lock, as two
    runs may share one database."""
    if immutable:
        # Never writes, never locks, never creates -wal/-shm: what a folder we cannot write
        # allows (CI artifacts, another user's results). It does not see what a live writer
        # has not checkpointed yet.
        uri = f"{path.resolve().as_uri()}?immutable=1"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    elif readonly:
        uri = f"{path.resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    return conn


def _schema_version(conn: sqlite3.Connection, path: Path) -> int | None:
    """The soak schema version of a database; None for one with no tables at all.

    Anything else (tables without soak's `meta` row, a version that is not a whole number, or
    one newer than this soak knows) is refused: soak never changes another program's file.
    """
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return None
    if "meta" not in tables or "runs" not in tables:
        raise StoreError(
            f"{path}: not a soak results database (it holds other tables: "
            f"{', '.join(sorted(tables)[:5])}); pass --db with a new file"
        )
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    text = None if row is None else str(row[0])
    if text is None or not text.strip().isdigit():
        raise StoreError(
            f"{path}: not a soak results database (meta.schema_version is {text!r}, "
            "not a whole number)"
        )
    version = int(text)
    if not 1 <= version <= SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema version {version} is not one this soak understands "
            f"(it knows 1 to {SCHEMA_VERSION}); a newer soak wrote it"
        )
    return version


def _check_header(path: Path) -> bool:
    """False for an empty file; raises for a file that is not SQLite at all."""
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc.strerror}") from exc
    if not head:
        return False
    if head != SQLITE_MAGIC:
        raise StoreError(f"{path}: not a soak results database (not an SQLite file)")
    return True


def _open_existing(path: Path) -> tuple[sqlite3.Connection, int | None]:
    """A read-only connection to an existing SQLite file and its soak schema version.

    Without a -wal file beside it the main file is the whole database, so it is read in
    immutable mode: nothing is created, locked or changed (another program's WAL database
    would otherwise get -wal/-shm files, and a folder we cannot write would refuse them).
    With a -wal file (a run is writing, or one was killed) mode=ro honours the log; where even
    that cannot open (an unwritable folder), immutable mode reads what was checkpointed.
    """
    modes = (False, True) if _exists(path.with_name(path.name + "-wal")) else (True,)
    for immutable in modes:
        conn = None
        try:
            conn = connect(path, readonly=True, immutable=immutable)
            conn.execute("PRAGMA query_only = ON")
            return conn, _schema_version(conn, path)
        except sqlite3.OperationalError as exc:
            if conn is not None:
                conn.close()
            if immutable or not _cannot_open(exc):
                raise StoreError(f"{path}: cannot read: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            raise StoreError(f"{path}: not a soak results database ({exc})") from exc
        except StoreError:
            if conn is not None:
                conn.close()
            raise
    raise AssertionError("unreachable")


def _exists(path: Path) -> bool:
    try:
        path.stat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc.strerror}") from exc
    return True


def _is_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc.strerror}") from exc


def _cannot_open(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "unable to open" in text or "readonly" in text or "read-only" in text


def open_readonly(path: str | os.PathLike) -> sqlite_utils.Database:
    """For triage: a database that refuses every write, also in a folder we cannot write."""
    path = Path(path)
    if not _is_file(path):
        raise StoreError(f"{path}: no results database here (run `soak run` first, or pass --db)")
    if not _check_header(path):
        raise StoreError(f"{path}: empty file, not a soak results database")
    conn, version = _open_existing(path)
    if version is None:
        conn.close()
        raise StoreError(f"{path}: not a soak results database (it holds no tables)")
    return sqlite_utils.Database(conn)


def check_writable_target(path: str | os.PathLike) -> None:
    """Refuse, without touching it, an existing file that is not a soak database of a schema
    this soak knows; a missing or empty file is fine (it becomes one)."""
    path = Path(path)
    if not _is_file(path) or not _check_header(path):
        return
    conn, _ = _open_existing(path)
    conn.close()
