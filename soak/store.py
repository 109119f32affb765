"""The results database (SQLite through sqlite-utils): schema, writes, read-only opens.

WAL mode and one transaction per iteration, so a run killed at any moment keeps every
committed iteration. Never imports triton; the workload never sees SQL. Units are in the
column names (`_bytes`, `_s`) so a query never has to guess.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from soak.errors import StoreError
from soak.phases import PHASES

SCHEMA_VERSION = 1
RUN_STATUSES = (
    "running",
    "passed",
    "leaked",
    "failed",
    "crashed",
    "hung",
    "interrupted",
    "inconclusive",
)
SAMPLE_COLUMNS: dict[str, type] = {
    "rss_bytes": int,
    "uss_bytes": int,
    "pss_bytes": int,
    "vms_bytes": int,
    "fds": int,
    "threads": int,
    "children": int,
    "children_rss_bytes": int,
    "stubs_alive": int,
    "shm_regions": int,
    "shm_bytes": int,
    "sample_cost_s": float,
    "tracemalloc_bytes": int,
    "tracemalloc_peak_bytes": int,
    "gc_objects": int,
    "mallinfo_inuse_bytes": int,
    "mallinfo_free_bytes": int,
    "gpu_process_bytes": int,
    "gpu_used_bytes": int,
}
BUSY_TIMEOUT_S = 30.0


def _schema(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db["runs"].create(
        {
            "id": int,
            "profile": str,
            "profile_source": str,
            "profile_text": str,
            "matrix": str,
            "cell": str,
            "started_at": float,
            "ended_at": float,
            "heartbeat_at": float,
            "status": str,
            "verdict": str,
            "exit_code": int,
            "reason": str,
            "host": str,
            "cpu_count": int,
            "gpu_name": str,
            "gpu_driver": str,
            "triton_version": str,
            "triton_library": str,
            "python_version": str,
            "soak_version": str,
            "servers": int,
            "iterations_planned": int,
            "iterations_done": int,
            "memory_type": str,
            "instance_kind": str,
            "inferences_per_model": int,
            "datatype": str,
            "scenario": str,
            "behaviour": str,
            "error_fraction": float,
            "supervisor_pid": int,
            "worker_pid": int,
            "config": str,
        },
        pk="id",
        not_null={"profile", "status", "started_at"},
        if_not_exists=True,
    )
    iteration_cols: dict[str, type] = {
        "run_id": int,
        "iteration": int,
        "ended_at": float,
        "wall_s": float,
        "server_lifecycles": int,
        "model_loads": int,
        "failed_loads": int,
        "inferences": int,
        "errors": int,
        "failures": int,
    }
    for p in PHASES:
        iteration_cols[f"{p}_sum_s"] = float
        iteration_cols[f"{p}_max_s"] = float
    db["iterations"].create(
        iteration_cols,
        pk=("run_id", "iteration"),
        foreign_keys=[("run_id", "runs", "id")],
        if_not_exists=True,
    )
    _add_missing_columns(db, "runs", {"scenario": str, "behaviour": str, "error_fraction": float})
    _add_missing_columns(db, "iterations", {"failed_loads": int, "errors": int})
    db["samples"].create(
        {
            "id": int,
            "run_id": int,
            "iteration": int,
            "kind": str,
            "phase": str,
            "t": float,
            "elapsed_s": float,
            **SAMPLE_COLUMNS,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
        if_not_exists=True,
    )
    db["gpu_samples"].create(
        {
            "sample_id": int,
            "device": int,
            "name": str,
            "used_bytes": int,
            "total_bytes": int,
            "process_bytes": int,
        },
        pk=("sample_id", "device"),
        foreign_keys=[("sample_id", "samples", "id")],
        if_not_exists=True,
    )
    db["heap_types"].create(
        {"run_id": int, "iteration": int, "type_name": str, "count": int, "increase": int},
        foreign_keys=[("run_id", "runs", "id")],
        if_not_exists=True,
    )
    db["events"].create(
        {
            "id": int,
            "run_id": int,
            "iteration": int,
            "t": float,
            "kind": str,
            "instance": int,
            "phase": str,
            "message": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
        if_not_exists=True,
    )
    db["findings"].create(
        {
            "run_id": int,
            "metric": str,
            "kind": str,
            "verdict": str,
            "slope": float,
            "slope_low": float,
            "slope_high": float,
            "p_value": float,
            "tau": float,
            "n_used": int,
            "warmup_cut": int,
            "baseline": float,
            "final": float,
            "total_growth": float,
            "threshold": float,
            "growth_budget": float,
            "growth_started_at": int,
            "slopes_per_unit": str,
            "reason": str,
            "analyzed_at": float,
        },
        pk=("run_id", "metric"),
        foreign_keys=[("run_id", "runs", "id")],
        if_not_exists=True,
    )
    for table, cols in (
        ("samples", ["run_id", "kind", "iteration"]),
        ("events", ["run_id", "kind"]),
        ("heap_types", ["run_id", "iteration"]),
        ("runs", ["profile", "started_at"]),
        ("runs", ["status"]),
        ("findings", ["metric", "verdict"]),
    ):
        db[table].create_index(cols, if_not_exists=True)
    db["meta"].upsert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")


def _add_missing_columns(db: sqlite_utils.Database, table: str, columns: dict[str, type]) -> None:
    """Columns added after a database was made: old rows read NULL there (unknown), which the
    analysis treats as no count."""
    have = db[table].columns_dict
    for name, kind in columns.items():
        if name not in have:
            db[table].add_column(name, kind)


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    return conn


def open_readonly(path: str | os.PathLike) -> sqlite_utils.Database:
    """For triage: a database that refuses every write."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no results database here (run `soak run` first, or pass --db)")
    try:
        conn = _connect(path, readonly=True)
        conn.execute("PRAGMA query_only = ON")
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a soak results database ({exc})") from exc
    if version is None or int(version[0]) > SCHEMA_VERSION:
        raise StoreError(f"{path}: schema version {version} is not one this soak understands")
    return sqlite_utils.Database(conn)


class Store:
    """The writable side: one per process; every write is its own short transaction."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a directory, not a database file")
        parent = self.path.parent
        if parent.exists() and not parent.is_dir():
            raise StoreError(
                f"{parent}: is not a directory, so {self.path.name} cannot be created in it"
            )
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{parent}: cannot create: {exc.strerror}") from exc
        try:
            self.conn = _connect(self.path, readonly=False)
            self.db = sqlite_utils.Database(self.conn)
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            with self.transaction():
                _schema(self.db)
            self.conn.execute("SELECT count(*) FROM runs").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot open for writing: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE with retries: two runs may share one database."""
        for attempt in range(20):
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or attempt == 19:
                    raise StoreError(f"{self.path}: {exc}") from exc
                time.sleep(0.05 * (attempt + 1))
        try:
            yield
        except BaseException:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # already rolled back by SQLite (disk full): keep the original error
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            # A failed COMMIT (disk full, I/O error) may leave the transaction open; then every
            # later write of this connection would fail with "transaction within a transaction".
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite rolled it back itself
            raise StoreError(f"{self.path}: commit failed: {exc}{_hint(exc)}") from exc

    def _write(self, fn) -> Any:
        try:
            with self.transaction():
                return fn()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: write failed: {exc}{_hint(exc)}") from exc

    # -- runs -------------------------------------------------------------------------------
    def create_run(self, row: dict[str, Any]) -> int:
        now = time.time()
        full = {
            "status": "running",
            "started_at": now,
            "heartbeat_at": now,
            "host": socket.gethostname(),
            "cpu_count": os.cpu_count(),
            "supervisor_pid": os.getpid(),
            "iterations_done": 0,
            **row,
        }
        for key in ("cell", "config"):
            if isinstance(full.get(key), dict):
                full[key] = json.dumps(full[key], sort_keys=True)
        return self._write(lambda: self.db["runs"].insert(full).last_pk)

    def update_run(self, run_id: int, **values: Any) -> None:
        self._write(lambda: self.db["runs"].update(run_id, values))

    def heartbeat(self, run_id: int) -> None:
        self.update_run(run_id, heartbeat_at=time.time())

    # -- per iteration ----------------------------------------------------------------------
    def write_iteration(
        self,
        run_id: int,
        iteration: dict[str, Any],
        samples: list[dict[str, Any]],
        heap_types: list[dict[str, Any]],
        events: list[dict[str, Any]],
    ) -> None:
        """Everything of one iteration in one transaction: all of it lands, or none."""

        def write() -> None:
            self.db["iterations"].insert({"run_id": run_id, **iteration}, replace=True)
            for sample in samples:
                gpus = sample.pop("gpu_devices", None) or []
                sample_id = self.db["samples"].insert({"run_id": run_id, **sample}).last_pk
                for dev in gpus:
                    self.db["gpu_samples"].insert({"sample_id": sample_id, **dev})
            if heap_types:
                self.db["heap_types"].insert_all([{"run_id": run_id, **h} for h in heap_types])
            if events:
                self.db["events"].insert_all([{"run_id": run_id, **e} for e in events])
            self.db["runs"].update(
                run_id,
                {"iterations_done": iteration["iteration"] + 1, "heartbeat_at": time.time()},
            )

        self._write(write)

    def add_samples(self, run_id: int, samples: list[dict[str, Any]]) -> None:
        """Samples outside an iteration's transaction: the interval samples of a last,
        unfinished iteration."""
        if samples:
            self._write(
                lambda: self.db["samples"].insert_all([{"run_id": run_id, **s} for s in samples])
            )

    def add_events(self, run_id: int, events: list[dict[str, Any]]) -> None:
        if events:
            self._write(
                lambda: self.db["events"].insert_all([{"run_id": run_id, **e} for e in events])
            )

    def write_findings(self, run_id: int, findings: list[dict[str, Any]]) -> None:
        def write() -> None:
            self.db["findings"].delete_where("run_id = ?", [run_id])
            self.db["findings"].insert_all([{"run_id": run_id, **f} for f in findings])

        self._write(write)

    def close(self) -> None:
        self.conn.close()


def _hint(exc: Exception) -> str:
    """What a bare SQLite write error usually means on the disk side."""
    text = str(exc)
    if "disk is full" in text or "disk I/O error" in text:
        return " (is the disk full, or the file size limit `ulimit -f` reached?)"
    if "readonly" in text:
        return " (the file or its folder is not writable)"
    return ""


def event(
    kind: str,
    message: str,
    iteration: int | None = None,
    instance: int | None = None,
    phase: str | None = None,
) -> dict[str, Any]:
    return {
        "t": time.time(),
        "kind": kind,
        "message": message,
        "iteration": iteration,
        "instance": instance,
        "phase": phase,
    }
