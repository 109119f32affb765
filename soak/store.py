"""The results database (SQLite through sqlite-utils): schema, writes, read-only opens.

WAL mode and one transaction per iteration, so a run killed at any moment keeps every
committed iteration. Never imports triton; the workload never sees SQL. Units are in the
column names (`_bytes`, `_s`) so a query never has to guess.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import stat
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from soak.analysis.site_verdict import SiteSeries
from soak.analysis.verdict import Series
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
#: Iteration columns that count work units: the denominators of per-unit slopes.
UNIT_COLUMNS = {
    "server": "server_lifecycles",
    "model_load": "model_loads",
    "failed_load": "failed_loads",
    "inference": "inferences",
    "error": "errors",
}
#: Units older runs do not count (their columns came with the scenarios): NULL there.
LATER_UNITS = ("failed_load", "error")


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
            "ray_node_id": str,
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
    # -- allocation sites (attribution, soak.sampling.sites) --------------------------------
    # One row per kept site of a run; site_samples: live bytes and allocations of each site at
    # each quiet point after the warm-up. site_id 0 is the sum over every tracked allocation.
    db["sites"].create(
        {
            "run_id": int,
            "site_id": int,
            "stack_key": str,
            "stack_text": str,
            "frames": str,
            "summary": str,
            "python_frame": str,
            "soak_call": str,
            "phase": str,
            "thread": str,
        },
        pk=("run_id", "site_id"),
        foreign_keys=[("run_id", "runs", "id")],
        if_not_exists=True,
    )
    db["site_samples"].create(
        {"run_id": int, "iteration": int, "site_id": int, "live_bytes": int, "live_count": int},
        pk=("run_id", "site_id", "iteration"),
        foreign_keys=[("run_id", "runs", "id")],
        if_not_exists=True,
    )
    # -- end of allocation sites ------------------------------------------------------------
    if "ray_node_id" not in db["runs"].columns_dict:  # databases made before Ray cells
        db["runs"].add_column("ray_node_id", str)
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


SQLITE_MAGIC = b"SQLite format 3\x00"


def _connect(path: Path, readonly: bool, immutable: bool = False) -> sqlite3.Connection:
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
            conn = _connect(path, readonly=True, immutable=immutable)
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
        check_writable_target(self.path)
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

    def write_quiet_point(
        self,
        run_id: int,
        quiet: Mapping[str, Any],
        samples: list[dict[str, Any]],
        events: list[dict[str, Any]],
    ) -> None:
        """One quiet point, as `write_iteration`; ``quiet`` is the worker's report as a dict
        (`soak.runner.protocol.Quiet`), whose fields are named as the iterations columns."""
        iteration = quiet["iteration"]
        row = {
            "iteration": iteration,
            "ended_at": time.time(),
            **{
                k: quiet[k]
                for k in (
                    "wall_s",
                    "server_lifecycles",
                    "model_loads",
                    "failed_loads",
                    "inferences",
                    "errors",
                )
            },
            "failures": len(quiet["failures"]),
        }
        for phase, value in quiet["phase_sum_s"].items():
            row[f"{phase}_sum_s"] = value
        for phase, value in quiet["phase_max_s"].items():
            row[f"{phase}_max_s"] = value
        heap_types = [
            {"iteration": iteration, "type_name": name, "count": count, "increase": increase}
            for name, count, increase in quiet["heap"].get("growth") or []
        ]
        self.write_iteration(run_id, row, samples, heap_types, events)

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

    def write_sites(
        self, run_id: int, sites: list[dict[str, Any]], samples: list[dict[str, Any]]
    ) -> None:
        """A run's allocation sites and their per-quiet-point series, in one transaction."""

        def write() -> None:
            for table in ("sites", "site_samples"):
                self.db[table].delete_where("run_id = ?", [run_id])
            self.db["sites"].insert_all(
                [{"run_id": run_id, **s, "frames": json.dumps(s["frames"])} for s in sites]
            )
            self.db["site_samples"].insert_all([{"run_id": run_id, **s} for s in samples])

        self._write(write)

    def write_findings(self, run_id: int, findings: list[dict[str, Any]]) -> None:
        def write() -> None:
            self.db["findings"].delete_where("run_id = ?", [run_id])
            self.db["findings"].insert_all([{"run_id": run_id, **f} for f in findings])

        self._write(write)

    # -- runs made elsewhere (Ray cells) -----------------------------------------------------
    def import_run(self, rows: dict[str, list[dict[str, Any]]], tags: dict[str, Any]) -> int:
        """A run exported by `export_run` from another database, under a new id, in one
        transaction; ``tags`` (the node: host, ray_node_id, gpu_name) overwrite its run row.
        Findings are not imported: the importer judges the run itself."""

        def write() -> int:
            run = {k: v for k, v in rows["runs"][0].items() if k != "id"}
            run_id = self.db["runs"].insert({**run, **tags}).last_pk
            self.db["iterations"].insert_all([{**r, "run_id": run_id} for r in rows["iterations"]])
            sample_ids = {}
            for sample in rows["samples"]:
                new = {k: v for k, v in sample.items() if k != "id"}
                sample_ids[sample["id"]] = (
                    self.db["samples"].insert({**new, "run_id": run_id}).last_pk
                )
            self.db["gpu_samples"].insert_all(
                [{**g, "sample_id": sample_ids[g["sample_id"]]} for g in rows["gpu_samples"]]
            )
            self.db["heap_types"].insert_all([{**h, "run_id": run_id} for h in rows["heap_types"]])
            events = [{k: v for k, v in e.items() if k != "id"} for e in rows["events"]]
            self.db["events"].insert_all([{**e, "run_id": run_id} for e in events])
            return run_id

        return self._write(write)

    def close(self) -> None:
        self.conn.close()


def export_run(db: sqlite_utils.Database, run_id: int) -> dict[str, list[dict[str, Any]]]:
    """Every stored row of one run, table by table, for `Store.import_run` elsewhere."""
    by_run = "run_id = ?"
    out: dict[str, list[dict[str, Any]]] = {
        "runs": list(db.query("SELECT * FROM runs WHERE id = ?", [run_id]))
    }
    for table in ("iterations", "samples", "heap_types", "events"):
        out[table] = list(db.query(f"SELECT * FROM {table} WHERE {by_run}", [run_id]))
    out["gpu_samples"] = list(
        db.query(
            "SELECT g.* FROM gpu_samples g JOIN samples s ON s.id = g.sample_id WHERE s.run_id = ?",
            [run_id],
        )
    )
    return out


def _hint(exc: Exception) -> str:
    """What a bare SQLite write error usually means on the disk side."""
    text = str(exc)
    if "disk is full" in text or "disk I/O error" in text:
        return " (is the disk full, or the file size limit `ulimit -f` reached?)"
    if "readonly" in text:
        return " (the file or its folder is not writable)"
    return ""


#: Columns of a quiet-point sample filled from the worker's heap sample
#: (`soak.sampling.heap.HeapSample.as_dict`), by the heap sample's field.
HEAP_COLUMNS = {
    "tracemalloc_current_bytes": "tracemalloc_bytes",
    "tracemalloc_peak_bytes": "tracemalloc_peak_bytes",
    "gc_objects": "gc_objects",
    "mallinfo_inuse_bytes": "mallinfo_inuse_bytes",
    "mallinfo_free_bytes": "mallinfo_free_bytes",
}


def sample_row(
    kind: str,
    iteration: int | None,
    phase: str | None,
    started: float,
    process: Mapping[str, Any],
    heap: Mapping[str, Any] | None = None,
    gpu: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A `samples` row from the samplers' plain dicts: ``process`` is
    `ProcessSample.as_dict` (named as the columns), ``heap`` `HeapSample.as_dict`, ``gpu``
    `GpuSample.as_dict` (its devices, named as the `gpu_samples` columns, become rows there);
    ``started`` is when the run began (`elapsed_s`)."""
    now = time.time()
    row = {
        "iteration": iteration,
        "kind": kind,
        "phase": phase,
        "t": now,
        "elapsed_s": now - started,
        **process,
    }
    if heap is not None:
        row.update({column: heap.get(name) for name, column in HEAP_COLUMNS.items()})
    if gpu is not None:
        row["gpu_process_bytes"] = gpu["process_bytes"]
        row["gpu_used_bytes"] = gpu["device_used_bytes"]
        row["gpu_devices"] = list(gpu["devices"])
    return row


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


# -- reads --------------------------------------------------------------------------------


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
