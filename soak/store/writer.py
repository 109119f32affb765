"""The writable side of the results database: one Store per process, one short transaction
per write (an iteration's rows land together or not at all), so a run killed at any moment keeps
every committed iteration."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from soak.errors import StoreError
from soak.store.files import check_writable_target, connect
from soak.store.rows import compact_log_head, phase_rows, split_message
from soak.store.schema import LOG_HEAD_SQL, LOG_LEVEL_KINDS, ensure_schema


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
            self.conn = connect(self.path, readonly=False)
            self.db = sqlite_utils.Database(self.conn)
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            with self.transaction():
                ensure_schema(self.db)
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

    def end_run_after_failure(self, run_id: int, **values: Any) -> None:
        """`update_run` after a failed write (disk full, file size limit): a checkpoint first
        moves the WAL into the database and truncates it, which may free the room that one
        small update needs. StoreError when it still does not fit."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self.update_run(run_id, **values)

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
        server_samples: list[dict[str, Any]] | None = None,
    ) -> None:
        """Everything of one iteration in one transaction: all of it lands, or none. Samples
        of kind `interval` are stored as their phases (`phase_rows`); `server_samples`: each
        server process apart (server, pid, SERVER_SAMPLE_COLUMNS)."""

        interval = [s for s in samples if s.get("kind") == "interval"]
        samples = [s for s in samples if s.get("kind") != "interval"]

        def write() -> None:
            self.db["iterations"].insert({"run_id": run_id, **iteration}, replace=True)
            self._insert_phase_samples(run_id, interval)
            for sample in samples:
                gpus = sample.pop("gpu_devices", None) or []
                sample_id = self.db["samples"].insert({"run_id": run_id, **sample}).last_pk
                for dev in gpus:
                    self.db["gpu_samples"].insert({"sample_id": sample_id, **dev})
            if heap_types:
                self.db["heap_types"].insert_all([{"run_id": run_id, **h} for h in heap_types])
            self._insert_events(run_id, events)
            if server_samples:
                self.db["server_samples"].insert_all(
                    [
                        {"run_id": run_id, "iteration": iteration["iteration"], **s}
                        for s in server_samples
                    ],
                    replace=True,
                )
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
        server_samples: list[dict[str, Any]] | None = None,
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
            **{k: quiet.get(k) for k in ("responses", "cache_hits", "cache_insertions")},
            **{k: quiet.get(k) for k in ("metrics_successes", "metrics_failures")},
            "metrics_failure_reasons": _json_or_none(quiet.get("metrics_failure_reasons")),
            "metrics_pending": quiet.get("metrics_pending"),
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
        self.write_iteration(run_id, row, samples, heap_types, events, server_samples)

    def add_interval_samples(self, run_id: int, samples: list[dict[str, Any]]) -> None:
        """Interval samples outside an iteration's transaction: those of a last, unfinished
        iteration, stored as their phases."""
        if samples:
            self._write(lambda: self._insert_phase_samples(run_id, samples))

    def _insert_phase_samples(self, run_id: int, samples: list[dict[str, Any]]) -> None:
        rows = phase_rows(samples)
        if rows:
            self.db["phase_samples"].insert_all([{"run_id": run_id, **r} for r in rows])

    def add_events(self, run_id: int, events: list[dict[str, Any]]) -> None:
        if events:
            self._write(lambda: self._insert_events(run_id, events))

    def _insert_events(self, run_id: int, events: list[dict[str, Any]]) -> None:
        """Event rows, each message text stored once per database (`messages`): a Triton
        start-up line or a raised message repeats every iteration."""
        rows = []
        for event in events:
            row = {k: v for k, v in event.items() if k != "message"}
            text = event.get("message")
            if text is not None:
                prefix, rest = split_message(text)
                compact = self._compact_head(prefix, row.get("t"))
                if compact is not None:
                    columns, source = compact
                    row.update(columns)
                    rest = source + rest
                    if row.get("kind") == LOG_LEVEL_KINDS.get(columns["log_head"][:1]):
                        row["kind"] = None  # the view's, by the level
                else:
                    row["message_prefix"] = prefix
                row["message_id"] = self._message_id(rest)
            rows.append({**row, "run_id": run_id})
        if rows:
            self.db["event_rows"].insert_all(rows)

    def _compact_head(self, prefix: str | None, t: Any) -> tuple[dict[str, Any], str] | None:
        """`compact_log_head`, kept only where the events view rebuilds the prefix exactly
        (asked of SQLite itself, with the view's expression)."""
        if prefix is None or not isinstance(t, float):
            return None
        compact = compact_log_head(prefix, t)
        if compact is None:
            return None
        columns, source = compact
        (rebuilt,) = self.conn.execute(
            f"SELECT {LOG_HEAD_SQL} FROM (SELECT ? AS t, ? AS log_head, ? AS log_utc_offset_s) e",
            [t, columns["log_head"], columns["log_utc_offset_s"]],
        ).fetchone()
        return compact if rebuilt + source == prefix else None

    def _message_id(self, text: str) -> int:
        self.conn.execute("INSERT OR IGNORE INTO messages (text) VALUES (?)", [text])
        return self.conn.execute("SELECT id FROM messages WHERE text = ?", [text]).fetchone()[0]

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
            self._insert_events(run_id, events)
            for table in ("server_samples", "phase_samples"):
                self.db[table].insert_all([{**s, "run_id": run_id} for s in rows.get(table, [])])
            return run_id

        return self._write(write)

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


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)
