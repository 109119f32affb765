"""Triage of stored runs: list, show, query, compare. Reads the results database, never writes it.

Every function takes a database opened with ``soak.store.open_readonly`` (a connection that
refuses writes); ``run_query`` also refuses writes itself, before SQLite sees them, so that a
user's ``DELETE`` is answered with a clear sentence rather than a driver error. Nothing here
prints: ``soak.cli_triage`` formats what these functions return.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import socket
import sqlite3
import statistics
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import sqlite_utils

from soak.analysis.trend import cut_warmup, mann_kendall, theil_sen
from soak.analysis.verdict import Finding
from soak.analyze import latest_run_id, load_series, rules_for, run_row
from soak.errors import SoakError, StoreError
from soak.profile import COUNTER_METRICS, MATRIX_KEYS, MEMORY_METRICS
from soak.report.console import human
from soak.store import PHASES, open_readonly

#: A running run whose heartbeat is older than this many seconds may be abandoned ...
STALE_MIN_S = 300.0
#: ... or than this many median iteration wall times, whichever is longer.
STALE_ITERATIONS = 10.0
#: A supervisor pid whose process started this long after the run did is a reused pid.
PID_REUSE_SLACK_S = 1.0
#: Fewer quiet samples than this after the warm-up give no slope (as in ``verdict.judge``).
MIN_POINTS = 5
#: Two-sided 95 % normal quantile; compare's intervals are widened from it.
Z95 = 1.959963984540054
#: Messages shown per event kind in ``soak show`` (stack dumps are always shown in full).
EVENT_EXAMPLES = 3

_VERDICT_ORDER = {"leak": 0, "inconclusive": 1, "pass": 2, "no_data": 3}
_EVENT_ORDER = (
    "crash",
    "signal",
    "hang",
    "stack_dump",
    "error",
    "failure",
    "leftover_stub",
    "leftover_shm",
    "cleanup",
    "triton_error",
    "triton_warning",
)
_FULL_EVENT_KINDS = {"stack_dump", "crash", "signal", "hang", "error"}
_TRITON_KINDS = {"triton_warning", "triton_error"}


class QueryRefused(StoreError):
    """A query that would change the database (or a connection setting); never run."""


@contextmanager
def readonly(path: str | Path) -> Iterator[sqlite_utils.Database]:
    """The database opened read-only for the length of one command, then closed."""
    db = open_readonly(path)
    try:
        yield db
    finally:
        db.conn.close()


# -- small formatting helpers shared by the commands ---------------------------------------


def local_time(epoch: float | None) -> str:
    """Local wall-clock time to the second; '-' for a missing time."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def iso_time(epoch: float | None) -> str | None:
    """ISO 8601 local time with its UTC offset, for JSON (unambiguous across machines)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def duration(seconds: float | None) -> str:
    """A compact human duration: 45s, 12m03s, 3h04m, 2d03h."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def parse_cell(text: str | None) -> dict[str, Any]:
    """A run's matrix cell as a dict ({} for a plain run or unreadable JSON)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def cell_label(cell: Mapping[str, Any]) -> str:
    """Compact k=v form of a matrix cell, keys in the order the matrix names them."""
    if not cell:
        return "-"
    order = {k: i for i, k in enumerate(MATRIX_KEYS)}
    keys = sorted(cell, key=lambda k: (order.get(k, len(order)), k))
    return " ".join(f"{k}={cell[k]}" for k in keys)


def finite(value: Any) -> float | None:
    """A finite float, or None (NULL, NaN and infinities all mean 'no number')."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# -- run lookup -----------------------------------------------------------------------------


def resolve_run(db: sqlite_utils.Database, spec: str | int) -> int:
    """A run id from 'latest' or a number; an error naming the id when it does not exist."""
    if isinstance(spec, int):
        run_id = spec
    elif str(spec).strip().lower() == "latest":
        return latest_run_id(db)
    else:
        try:
            run_id = int(str(spec).strip())
        except ValueError:
            raise StoreError(f"{spec!r} is not a run id (give a number or 'latest')") from None
    run_row(db, run_id)  # raises "no run N in this database (runs go up to M)"
    return run_id


# -- abandoned runs -------------------------------------------------------------------------


def staleness_limit(median_wall_s: float | None) -> float:
    """How old a heartbeat may be before a running run is suspect.

    The supervisor writes a heartbeat with every iteration, so a heartbeat older than ten
    typical iterations (and never less than five minutes, for runs with short iterations
    and for runs that have not finished their first one) means nothing has been committed
    for far longer than the run itself says an iteration takes.
    """
    wall = finite(median_wall_s) or 0.0
    return max(STALE_MIN_S, STALE_ITERATIONS * wall)


def supervisor_alive(pid: int | None, started_at: float | None) -> bool:
    """Whether the run's supervisor process still exists on this host.

    A process with that pid that started after the run did is another process that reused
    the pid, so it counts as dead. A process we may not inspect counts as alive: showing a
    dead run as running is the safe mistake.
    """
    if not pid or pid <= 0:
        return False
    try:
        created = psutil.Process(int(pid)).create_time()
    except psutil.NoSuchProcess:  # includes zombies: exited, only not yet reaped
        return False
    except psutil.Error:
        return True
    return started_at is None or created <= float(started_at) + PID_REUSE_SLACK_S


def display_status(
    run: Mapping[str, Any],
    median_wall_s: float | None,
    now: float | None = None,
    this_host: str | None = None,
) -> tuple[str, str]:
    """The status to show, and why a run is called 'abandoned' ('' otherwise).

    A run is abandoned when its stored status is 'running', its heartbeat is older than
    :func:`staleness_limit`, and its supervisor is not alive. The pid can only be checked on
    the host that ran it; for a run of another host the stale heartbeat alone decides. This
    is display only: the database is never changed.
    """
    status = str(run.get("status") or "")
    if status != "running":
        return status, ""
    now = time.time() if now is None else now
    beat = finite(run.get("heartbeat_at")) or finite(run.get("started_at")) or now
    age = now - beat
    limit = staleness_limit(median_wall_s)
    if age <= limit:
        return status, ""
    host = run.get("host")
    here = this_host if this_host is not None else socket.gethostname()
    pid = run.get("supervisor_pid")
    if host == here:
        if supervisor_alive(pid, finite(run.get("started_at"))):
            return status, ""
        where = f"supervisor pid {pid} is not alive on {host}"
    else:
        where = f"it ran on {host or 'an unknown host'}, so its supervisor cannot be checked here"
    return "abandoned", (
        f"stored as running, but the last heartbeat was {duration(age)} ago "
        f"(limit {duration(limit)}) and {where}"
    )


def _median_walls(db: sqlite_utils.Database, run_ids: Sequence[int]) -> dict[int, float]:
    if not run_ids:
        return {}
    marks = ", ".join("?" for _ in run_ids)
    walls: dict[int, list[float]] = {}
    for run_id, wall in db.execute(
        f"SELECT run_id, wall_s FROM iterations WHERE run_id IN ({marks}) AND wall_s IS NOT NULL",
        list(run_ids),
    ):
        walls.setdefault(run_id, []).append(wall)
    return {k: statistics.median(v) for k, v in walls.items()}


# -- soak runs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorstMetric:
    """The finding that most deserves a look, and how far past its limit it is.

    ``basis`` says what ``ratio`` divides by: "budget" (total growth / growth budget) or
    "threshold" (slope / slope threshold). ``ratio`` is inf for growth against a zero
    allowance (a counter that did not come back, a zero shm budget).
    """

    metric: str
    verdict: str
    ratio: float
    basis: str
    growth: float | None

    def describe(self) -> str:
        if self.verdict == "leak":
            growth = (
                ""
                if self.growth is None
                else f" {'+' if self.growth >= 0 else ''}" + human(self.growth, self.metric)
            )
            if not math.isfinite(self.ratio):
                ratio = ""
            elif self.ratio >= 1:
                ratio = f" ({self.ratio:.1f}x {self.basis})"
            else:
                ratio = f" ({100 * self.ratio:.0f}% of {self.basis})"
            return f"{self.metric} leak{growth}{ratio}"
        return f"{self.metric} {self.ratio:.2f}x {self.basis}"


def _leak_severity(row: Mapping[str, Any]) -> tuple[float, str]:
    growth, budget = finite(row.get("total_growth")), finite(row.get("growth_budget"))
    if growth is not None and budget:
        return growth / budget, "budget"
    slope, threshold = finite(row.get("slope")), finite(row.get("threshold"))
    if slope is not None and threshold:
        return slope / threshold, "threshold"
    return (math.inf if (growth or 0.0) > 0 else 0.0), "budget"


def worst_metric(findings: Sequence[Mapping[str, Any]]) -> WorstMetric | None:
    """The leaking finding with the largest growth relative to its budget; without a leak,
    the finding with the largest slope/threshold ratio; None without findings to rank.
    """
    leaks = [f for f in findings if f.get("verdict") == "leak"]
    if leaks:
        ranked = []
        for row in leaks:
            ratio, basis = _leak_severity(row)
            growth = finite(row.get("total_growth"))
            ranked.append((ratio, growth or 0.0, row["metric"], basis, growth))
        ratio, _, metric, basis, growth = max(ranked, key=lambda r: (r[0], r[1], r[2]))
        return WorstMetric(metric, "leak", ratio, basis, growth)
    best = None
    for row in findings:
        slope, threshold = finite(row.get("slope")), finite(row.get("threshold"))
        if slope is None or not threshold:
            continue
        candidate = (slope / threshold, row["metric"], row.get("verdict") or "")
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    if best is None:
        return None
    return WorstMetric(best[1], best[2], best[0], "threshold", None)


@dataclass(frozen=True)
class RunSummary:
    """One line of ``soak runs``: times are epoch seconds, ``status`` is the shown one."""

    id: int
    started_at: float
    profile: str
    matrix: str | None
    cell: dict[str, Any]
    status: str
    stored_status: str
    abandoned_reason: str
    verdict: str | None
    duration_s: float | None
    iterations_done: int | None
    iterations_planned: int | None
    worst: WorstMetric | None

    def as_dict(self) -> dict[str, Any]:
        """The JSON/CSV row: plain values, times both as epoch and as local ISO text."""
        return {
            "id": self.id,
            "started": iso_time(self.started_at),
            "started_at": self.started_at,
            "profile": self.profile,
            "matrix": self.matrix,
            "cell": cell_label(self.cell) if self.cell else None,
            "status": self.status,
            "stored_status": self.stored_status,
            "verdict": self.verdict,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "iterations_done": self.iterations_done,
            "iterations_planned": self.iterations_planned,
            "worst_metric": self.worst.metric if self.worst else None,
            "worst": self.worst.describe() if self.worst else None,
        }


def run_duration(run: Mapping[str, Any], now: float | None = None) -> float | None:
    """Seconds from start to end; for a run without an end, to its last heartbeat."""
    start = finite(run.get("started_at"))
    end = finite(run.get("ended_at")) or finite(run.get("heartbeat_at"))
    if start is None:
        return None
    if end is None:
        end = time.time() if now is None else now
    return end - start


def list_runs(
    db: sqlite_utils.Database,
    limit: int = 20,
    profile: str | None = None,
    status: str | None = None,
    now: float | None = None,
) -> list[RunSummary]:
    """Newest runs first. ``status`` filters on the shown status ('abandoned' included);
    ``limit`` 0 means all.
    """
    now = time.time() if now is None else now
    where, args = [], []
    if profile:
        where.append("profile = ?")
        args.append(profile)
    if status:
        where.append("status = ?")
        args.append("running" if status == "abandoned" else status)
    sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY id DESC"
    # 'running' and 'abandoned' are told apart only after reading, so no SQL limit then.
    if limit and status not in ("running", "abandoned"):
        sql += f" LIMIT {int(limit)}"
    runs = list(db.query(sql, args))
    walls = _median_walls(db, [r["id"] for r in runs if r["status"] == "running"])
    findings: dict[int, list[dict[str, Any]]] = {}
    if runs:
        marks = ", ".join("?" for _ in runs)
        for row in db.query(
            f"SELECT * FROM findings WHERE run_id IN ({marks})", [r["id"] for r in runs]
        ):
            findings.setdefault(row["run_id"], []).append(row)
    here = socket.gethostname()
    out = []
    for run in runs:
        shown, reason = display_status(run, walls.get(run["id"]), now, here)
        if status and shown != status:
            continue
        out.append(
            RunSummary(
                id=run["id"],
                started_at=run["started_at"],
                profile=run["profile"],
                matrix=run.get("matrix"),
                cell=parse_cell(run.get("cell")),
                status=shown,
                stored_status=run["status"],
                abandoned_reason=reason,
                verdict=run.get("verdict"),
                duration_s=run_duration(run, now),
                iterations_done=run.get("iterations_done"),
                iterations_planned=run.get("iterations_planned"),
                worst=worst_metric(findings.get(run["id"], [])),
            )
        )
        if limit and len(out) >= limit:
            break
    return out


# -- soak show ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventMessage:
    """A distinct message of one event kind, how often it came, and where it first did."""

    text: str
    count: int
    iteration: int | None = None
    instance: int | None = None
    phase: str | None = None


@dataclass(frozen=True)
class EventGroup:
    """All events of one kind: the count and the first few distinct messages (all, in full,
    for stack dumps, crashes and hangs: those are read line by line)."""

    kind: str
    count: int
    messages: list[EventMessage]
    distinct: int


@dataclass(frozen=True)
class PhaseTiming:
    """The slowest instance's time in one phase, across the run's iterations (seconds)."""

    phase: str
    iterations: int
    median_s: float
    max_s: float


@dataclass(frozen=True)
class RunDetail:
    """Everything ``soak show`` prints about one run."""

    run: dict[str, Any]
    status: str
    abandoned_reason: str
    findings: list[dict[str, Any]]
    events: list[EventGroup]
    phases: list[PhaseTiming]

    def as_dict(self) -> dict[str, Any]:
        header = {k: v for k, v in self.run.items() if k not in ("profile_text", "config")}
        header["cell"] = parse_cell(self.run.get("cell")) or None
        for key in ("started_at", "ended_at", "heartbeat_at"):
            header[key.replace("_at", "")] = iso_time(self.run.get(key))
        header["stored_status"] = self.run.get("status")
        header["status"] = self.status
        header["abandoned_reason"] = self.abandoned_reason or None
        header["duration_s"] = run_duration(self.run)
        findings = []
        for row in self.findings:
            row = dict(row)
            row["slopes_per_unit"] = _units(row.get("slopes_per_unit"))
            findings.append(row)
        return {
            "run": header,
            "findings": findings,
            "events": [
                {
                    "kind": g.kind,
                    "count": g.count,
                    "distinct": g.distinct,
                    "messages": [m.__dict__ for m in g.messages],
                }
                for g in self.events
            ],
            "phases": [p.__dict__ for p in self.phases],
        }


def _units(text: Any) -> dict[str, float | None]:
    """slopes_per_unit JSON (which may hold NaN, as Python writes it) as finite-or-None."""
    if not text:
        return {}
    try:
        value = json.loads(text) if isinstance(text, str) else dict(text)
    except (TypeError, ValueError):
        return {}
    return {str(k): finite(v) for k, v in value.items()}


def finding_from_row(row: Mapping[str, Any]) -> Finding:
    """A stored findings row as the :class:`Finding` the analysis produced (NULL -> NaN)."""
    nan = math.nan

    def num(key: str) -> float:
        value = finite(row.get(key))
        return nan if value is None else value

    return Finding(
        metric=row["metric"],
        kind=row.get("kind") or "memory",
        verdict=row.get("verdict") or "no_data",
        slope=num("slope"),
        slope_low=num("slope_low"),
        slope_high=num("slope_high"),
        slopes_per_unit={
            k: (nan if v is None else v) for k, v in _units(row.get("slopes_per_unit")).items()
        },
        p_value=num("p_value"),
        tau=num("tau"),
        n_used=int(row.get("n_used") or 0),
        warmup_cut=int(row.get("warmup_cut") or 0),
        baseline=num("baseline"),
        final=num("final"),
        total_growth=num("total_growth"),
        threshold=finite(row.get("threshold")),
        growth_budget=finite(row.get("growth_budget")),
        growth_started_at=row.get("growth_started_at"),
        reason=row.get("reason") or "",
    )


def triton_message(message: str) -> str:
    """A Triton log line without its glog prefix ('W1125 14:03:22.123 42 file.cc:7] '), so
    the same warning from different times and threads counts as one."""
    head, sep, rest = message.partition("] ")
    return rest.strip() if sep and re.match(r"^[WEIF]\d{4} ", head) else message.strip()


def _event_groups(db: sqlite_utils.Database, run_id: int) -> list[EventGroup]:
    rows = list(
        db.query(
            "SELECT kind, iteration, instance, phase, message FROM events WHERE run_id = ? "
            "ORDER BY id",
            [run_id],
        )
    )
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(row)
    rank = {k: i for i, k in enumerate(_EVENT_ORDER)}
    groups = []
    for kind in sorted(by_kind, key=lambda k: (rank.get(k, len(rank)), k)):
        events = by_kind[kind]
        if kind in _FULL_EVENT_KINDS:
            messages = [
                EventMessage(e["message"] or "", 1, e["iteration"], e["instance"], e["phase"])
                for e in events
            ]
            distinct = len(messages)
        else:
            first: dict[str, dict[str, Any]] = {}
            counts: dict[str, int] = {}
            for e in events:
                text = e["message"] or ""
                text = triton_message(text) if kind in _TRITON_KINDS else text.strip()
                counts[text] = counts.get(text, 0) + 1
                first.setdefault(text, e)
            messages = [
                EventMessage(
                    t, counts[t], first[t]["iteration"], first[t]["instance"], first[t]["phase"]
                )
                for t in list(first)[:EVENT_EXAMPLES]
            ]
            distinct = len(first)
        groups.append(EventGroup(kind, len(events), messages, distinct))
    return groups


def _phase_timings(db: sqlite_utils.Database, run_id: int) -> list[PhaseTiming]:
    cols = ", ".join(f"{p}_max_s" for p in PHASES)
    rows = db.execute(f"SELECT {cols} FROM iterations WHERE run_id = ?", [run_id]).fetchall()
    out = []
    for k, phase in enumerate(PHASES):
        values = [r[k] for r in rows if finite(r[k]) is not None]
        if values:
            out.append(
                PhaseTiming(phase, len(values), float(np.median(values)), float(max(values)))
            )
    return out


def run_detail(db: sqlite_utils.Database, spec: str | int, now: float | None = None) -> RunDetail:
    """A run's header, findings (leaks first), events by kind, and phase timings."""
    run_id = resolve_run(db, spec)
    run = run_row(db, run_id)
    walls = _median_walls(db, [run_id])
    status, reason = display_status(run, walls.get(run_id), now)
    findings = list(db.query("SELECT * FROM findings WHERE run_id = ?", [run_id]))
    findings.sort(key=lambda f: (_VERDICT_ORDER.get(f["verdict"], 4), f["metric"]))
    return RunDetail(
        run, status, reason, findings, _event_groups(db, run_id), _phase_timings(db, run_id)
    )


# -- soak query -----------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


# Statements that change a database or a connection; refused before SQLite parses them.
_WRITE_KEYWORDS = {
    "INSERT",
    "UPDATE",
    "DELETE",
    "REPLACE",
    "UPSERT",
    "DROP",
    "CREATE",
    "ALTER",
    "ATTACH",
    "DETACH",
    "VACUUM",
    "REINDEX",
    "ANALYZE",
    "BEGIN",
    "COMMIT",
    "END",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
}
# PRAGMAs whose argument names a table or index and that only read.
_TABLE_PRAGMAS = {
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
}
# PRAGMAs that may be read (never set: those forms carry an argument).
_READ_PRAGMAS = _TABLE_PRAGMAS | {
    "user_version",
    "schema_version",
    "application_id",
    "page_count",
    "page_size",
    "freelist_count",
    "journal_mode",
    "encoding",
    "compile_options",
    "database_list",
    "function_list",
    "pragma_list",
    "collation_list",
    "module_list",
    "data_version",
    "query_only",
    "auto_vacuum",
    "foreign_keys",
    "busy_timeout",
    "cache_size",
}
_READ_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
_DENIED_ACTIONS = (
    "INSERT",
    "UPDATE",
    "DELETE",
    "CREATE_INDEX",
    "CREATE_TABLE",
    "CREATE_TEMP_INDEX",
    "CREATE_TEMP_TABLE",
    "CREATE_TEMP_TRIGGER",
    "CREATE_TEMP_VIEW",
    "CREATE_TRIGGER",
    "CREATE_VIEW",
    "CREATE_VTABLE",
    "DROP_INDEX",
    "DROP_TABLE",
    "DROP_TEMP_INDEX",
    "DROP_TEMP_TABLE",
    "DROP_TEMP_TRIGGER",
    "DROP_TEMP_VIEW",
    "DROP_TRIGGER",
    "DROP_VIEW",
    "DROP_VTABLE",
    "ALTER_TABLE",
    "DETACH",
    "SAVEPOINT",
    "ANALYZE",
    "REINDEX",
)
_ACTION_NAMES = {
    getattr(sqlite3, f"SQLITE_{name}"): name.replace("_", " ")
    for name in _DENIED_ACTIONS
    if hasattr(sqlite3, f"SQLITE_{name}")
}
_COMMENT_OR_SPACE = re.compile(r"(\s+|--[^\n]*(\n|$)|/\*.*?(\*/|$))", re.S)


def _strip_leading(sql: str) -> str:
    while True:
        m = _COMMENT_OR_SPACE.match(sql)
        if not m or not m.group(0):
            return sql
        sql = sql[m.end() :]


def split_statements(sql: str) -> list[str]:
    """The statements of ``sql`` (';' inside strings and comments does not split)."""
    out, start = [], 0
    for i, ch in enumerate(sql):
        if ch == ";" and sqlite3.complete_statement(sql[start : i + 1]):
            out.append(sql[start : i + 1])
            start = i + 1
    out.append(sql[start:])
    return [s for s in out if _strip_leading(s).strip(" ;\t\r\n")]


def _refuse_by_inspection(statement: str) -> None:
    body = _strip_leading(statement)
    word = re.match(r"[A-Za-z_]+", body)
    keyword = word.group(0).upper() if word else ""
    if keyword in _WRITE_KEYWORDS:
        raise QueryRefused(f"query refused: {keyword} statement: writes are not allowed")
    if keyword == "PRAGMA":
        m = re.match(r"PRAGMA\s+(?:\w+\s*\.\s*)?(\w+)\s*(=|\()?", body, re.I)
        name = m.group(1).lower() if m else "?"
        sets = m is not None and (
            m.group(2) == "=" or (m.group(2) == "(" and name not in _TABLE_PRAGMAS)
        )
        if sets:
            raise QueryRefused(f"query refused: PRAGMA {name} sets a value: writes are not allowed")


def _describe_action(action: int, arg1: str | None, arg2: str | None) -> str:
    what = _ACTION_NAMES.get(action, f"action {action}")
    if action == sqlite3.SQLITE_PRAGMA:
        return f"PRAGMA {arg1}" + (f" = {arg2}" if arg2 is not None else "")
    if action == sqlite3.SQLITE_ATTACH:
        return f"ATTACH of {arg1!r}"
    if action == sqlite3.SQLITE_TRANSACTION:
        return f"{arg1} (a transaction)"
    if action == sqlite3.SQLITE_UPDATE:
        return f"UPDATE of {arg1}.{arg2}"
    if action == sqlite3.SQLITE_INSERT:
        return f"INSERT into {arg1}"
    if action == sqlite3.SQLITE_DELETE:
        return f"DELETE from {arg1}"
    return f"{what} {arg1}" if arg1 else what


def run_query(
    db: sqlite_utils.Database, sql: str, params: Mapping[str, Any] | None = None
) -> QueryResult:
    """One read-only statement; writes are refused before they run.

    Two guards besides the read-only connection: the statement's first keyword (INSERT,
    DELETE, PRAGMA x = y, ...) and an SQLite authorizer that allows only reading actions,
    so a write hidden in a CTE or a view is refused at prepare time, before it executes.
    """
    statements = split_statements(sql)
    for statement in statements:
        _refuse_by_inspection(statement)
    if not statements:
        raise StoreError("query failed: the query is empty")
    if len(statements) > 1:
        raise StoreError(
            f"query failed: {len(statements)} statements given; soak query runs one at a time"
        )
    denied: list[str] = []

    def authorize(action: int, arg1: str | None, arg2: str | None, _db: Any, _src: Any) -> int:
        if action in _READ_ACTIONS:
            return sqlite3.SQLITE_OK
        if (
            action == sqlite3.SQLITE_PRAGMA
            and arg1
            and arg1.lower() in _READ_PRAGMAS
            and (arg2 is None or arg1.lower() in _TABLE_PRAGMAS)
        ):
            return sqlite3.SQLITE_OK
        denied.append(_describe_action(action, arg1, arg2))
        return sqlite3.SQLITE_DENY

    conn = db.conn
    conn.set_authorizer(authorize)
    try:
        cursor = conn.execute(statements[0], dict(params or {}))
        columns = [d[0] for d in cursor.description or ()]
        rows = [tuple(r) for r in cursor.fetchall()]
    except (sqlite3.Error, sqlite3.Warning) as exc:
        if denied:
            raise QueryRefused(f"query refused: {denied[0]}: writes are not allowed") from exc
        raise StoreError(f"query failed: {exc}") from exc
    finally:
        conn.set_authorizer(None)
    return QueryResult(columns, rows)


@dataclass(frozen=True)
class CannedQuery:
    """A named query of ``soak query NAME``; ``params`` maps each optional parameter to its
    meaning; ``needs`` says what data it needs when that is not always there."""

    name: str
    description: str
    sql: str
    params: dict[str, str] = field(default_factory=dict)
    needs: str = ""


JUDGED_METRICS = (*MEMORY_METRICS, *COUNTER_METRICS)


def _metric_case(alias: str) -> str:
    whens = " ".join(f"WHEN '{m}' THEN {alias}.{m}" for m in JUDGED_METRICS)
    return f"CASE m.metric {whens} END"


def _unit_slope(unit: str) -> str:
    # json.dumps writes NaN/Infinity, which SQLite's JSON functions reject: map them to null.
    text = (
        "REPLACE(REPLACE(REPLACE(f.slopes_per_unit, '-Infinity', 'null'), 'Infinity', 'null'), "
        "'NaN', 'null')"
    )
    return f"json_extract({text}, '$.{unit}')"


_GROWTH_SQL = f"""
WITH bounds AS (
  SELECT s.run_id, MIN(s.iteration) AS first_iteration, MAX(s.iteration) AS last_iteration
  FROM samples s JOIN runs r ON r.id = s.run_id
  WHERE s.kind = 'quiet'
    AND s.iteration >= COALESCE(json_extract(r.config, '$.run.warmup'), 1)
    AND (:run IS NULL OR s.run_id = :run)
  GROUP BY s.run_id
),
metrics(metric) AS (VALUES {", ".join(f"('{m}')" for m in JUDGED_METRICS)}),
pairs AS (
  SELECT b.run_id, b.first_iteration, b.last_iteration, m.metric,
         {_metric_case("f")} AS first_value, {_metric_case("l")} AS last_value
  FROM bounds b
  JOIN samples f ON f.run_id = b.run_id AND f.kind = 'quiet' AND f.iteration = b.first_iteration
  JOIN samples l ON l.run_id = b.run_id AND l.kind = 'quiet' AND l.iteration = b.last_iteration
  CROSS JOIN metrics m
  WHERE :metric IS NULL OR m.metric = :metric
)
SELECT p.run_id AS run, r.profile, r.cell, p.metric,
       p.first_iteration, p.last_iteration, p.first_value, p.last_value,
       p.last_value - p.first_value AS growth,
       ROUND((p.last_value - p.first_value) * 1.0
             / NULLIF(p.last_iteration - p.first_iteration, 0), 1) AS growth_per_iteration,
       fi.verdict, fi.total_growth AS finding_growth
FROM pairs p
JOIN runs r ON r.id = p.run_id
LEFT JOIN findings fi ON fi.run_id = p.run_id AND fi.metric = p.metric
WHERE p.first_value IS NOT NULL AND p.last_value IS NOT NULL
ORDER BY p.run_id, p.metric
"""

_PHASE_ORDER = ", ".join(f"('{p}', {k})" for k, p in enumerate(PHASES))
_PHASE_MEMORY_SQL = f"""
WITH quiet AS (
  SELECT run_id, id, iteration, rss_bytes FROM samples
  WHERE kind = 'quiet' AND (:run IS NULL OR run_id = :run)
),
during AS (
  -- Interval samples carry their iteration; where one has none (runs stored by earlier
  -- versions), it is that of the next quiet sample by id: a running minimum over the run's
  -- samples in descending id order (quiet iterations rise with id).
  SELECT run_id, phase, rss_bytes, kind,
         COALESCE(iteration, MIN(CASE WHEN kind = 'quiet' THEN iteration END)
                  OVER (PARTITION BY run_id ORDER BY id DESC ROWS UNBOUNDED PRECEDING)) AS iteration
  FROM samples
  WHERE kind IN ('quiet', 'interval') AND (:run IS NULL OR run_id = :run)
),
ranked AS (
  SELECT run_id, iteration, phase, rss_bytes,
         ROW_NUMBER() OVER (PARTITION BY run_id, iteration, phase ORDER BY rss_bytes) AS k,
         COUNT(*) OVER (PARTITION BY run_id, iteration, phase) AS n
  FROM during
  WHERE kind = 'interval' AND phase IS NOT NULL AND rss_bytes IS NOT NULL
),
phase_median AS (
  SELECT run_id, iteration, phase, AVG(rss_bytes) AS median_rss, MAX(n) AS samples
  FROM ranked WHERE k IN ((n + 1) / 2, (n + 2) / 2)
  GROUP BY run_id, iteration, phase
),
phase_order(phase, ordinal) AS (VALUES {_PHASE_ORDER}),
per_iteration AS (
  SELECT m.run_id, m.iteration, m.phase, o.ordinal, m.samples,
         m.median_rss - before.rss_bytes AS added,
         after.rss_bytes - before.rss_bytes AS kept
  FROM phase_median m
  JOIN phase_order o ON o.phase = m.phase
  JOIN quiet before ON before.run_id = m.run_id AND before.iteration = m.iteration - 1
  JOIN quiet after ON after.run_id = m.run_id AND after.iteration = m.iteration
),
stepped AS (
  SELECT *, added - COALESCE(LAG(added) OVER (PARTITION BY run_id, iteration
                                              ORDER BY ordinal), 0) AS step
  FROM per_iteration
)
SELECT run_id AS run, phase, COUNT(*) AS iterations, SUM(samples) AS samples,
       CAST(ROUND(AVG(added)) AS INTEGER) AS added_bytes,
       CAST(ROUND(AVG(step)) AS INTEGER) AS step_bytes,
       CAST(MAX(added) AS INTEGER) AS max_added_bytes,
       CAST(ROUND(AVG(kept)) AS INTEGER) AS kept_bytes,
       ROUND(100.0 * AVG(kept) / NULLIF(AVG(added), 0), 1) AS kept_pct
FROM stepped
GROUP BY run_id, phase
ORDER BY run_id, MIN(ordinal)
"""


def _run_value(key: str) -> str:
    """A run's value of a matrix key: its runs column, or for keys newer than some databases
    (scenario, behaviour, error_fraction) the profile stored with the run."""
    if key in ("servers", "memory_type", "instance_kind", "inferences_per_model", "datatype"):
        return f"r.{key}"
    return f"json_extract(r.config, '$.run.{key}')"


_FACTOR_COLUMNS = ",\n       ".join(
    f"COALESCE(json_extract(r.cell, '$.{k}'), {_run_value(k)}) AS {k}" for k in MATRIX_KEYS
)
_MATRIX_FACTORS_SQL = f"""
SELECT r.matrix, f.metric, r.id AS run,
       {_FACTOR_COLUMNS},
       f.verdict, f.slope AS per_iteration,
       {_unit_slope("server")} AS per_server,
       {_unit_slope("model_load")} AS per_model_load,
       {_unit_slope("inference")} AS per_inference
FROM findings f JOIN runs r ON r.id = f.run_id
WHERE r.matrix IS NOT NULL AND f.slope IS NOT NULL
  AND (:matrix IS NULL OR r.matrix = :matrix)
  AND (:metric IS NULL OR f.metric = :metric)
  AND r.id = (SELECT MAX(r2.id) FROM runs r2
              WHERE r2.matrix = r.matrix AND r2.cell = r.cell AND (:upto IS NULL OR r2.id <= :upto))
ORDER BY r.matrix, f.metric, f.slope DESC, r.id
"""

_LEFTOVERS_SQL = """
SELECT r.id AS run, r.profile, r.cell, r.status,
       SUM(e.kind = 'leftover_stub') AS leftover_stubs,
       SUM(e.kind = 'leftover_shm') AS leftover_shm,
       (SELECT e2.message FROM events e2
        WHERE e2.run_id = r.id AND e2.kind IN ('leftover_stub', 'leftover_shm')
        ORDER BY e2.id LIMIT 1) AS first_message
FROM events e JOIN runs r ON r.id = e.run_id
WHERE e.kind IN ('leftover_stub', 'leftover_shm') AND (:run IS NULL OR r.id = :run)
GROUP BY r.id
ORDER BY r.id
"""

_FAILURES_SQL = """
SELECT e.run_id AS run, r.profile, r.cell, e.phase, e.instance, COUNT(*) AS failures,
       MIN(e.iteration) AS first_iteration, MAX(e.iteration) AS last_iteration,
       (SELECT e2.message FROM events e2
        WHERE e2.run_id = e.run_id AND e2.kind = 'failure'
          AND e2.phase IS e.phase AND e2.instance IS e.instance
        ORDER BY e2.id LIMIT 1) AS first_message
FROM events e JOIN runs r ON r.id = e.run_id
WHERE e.kind = 'failure' AND (:run IS NULL OR e.run_id = :run)
GROUP BY e.run_id, e.phase, e.instance
ORDER BY e.run_id, failures DESC, e.phase, e.instance
"""

_TRITON_WARNINGS_SQL = """
WITH w AS (
  SELECT run_id, kind,
         CASE WHEN instr(message, '] ') > 0
                   AND substr(message, 1, 1) IN ('W', 'E', 'I', 'F')
                   AND substr(message, 2, 4) GLOB '[0-9][0-9][0-9][0-9]'
              THEN trim(substr(message, instr(message, '] ') + 2))
              ELSE trim(message) END AS message
  FROM events
  WHERE kind IN ('triton_warning', 'triton_error') AND (:run IS NULL OR run_id = :run)
)
SELECT CASE kind WHEN 'triton_error' THEN 'error' ELSE 'warning' END AS level, message,
       COUNT(*) AS count, COUNT(DISTINCT run_id) AS runs,
       MIN(run_id) AS first_run, MAX(run_id) AS last_run
FROM w
GROUP BY kind, message
ORDER BY kind = 'triton_warning', count DESC, message
"""

_RUN = "only this run (an id or 'latest'; default: all runs)"
CANNED: dict[str, CannedQuery] = {
    q.name: q
    for q in (
        CannedQuery(
            "growth",
            "Growth per metric per run: first vs last quiet sample after the warm-up, "
            "with the finding's verdict and median-based growth.",
            _GROWTH_SQL,
            {"run": _RUN, "metric": "only this metric (e.g. rss_bytes)"},
        ),
        CannedQuery(
            "phase-memory",
            "Which lifecycle phase adds memory the quiet point does not give back: median RSS "
            "during each phase minus the preceding quiet RSS, and what the next quiet point kept.",
            _PHASE_MEMORY_SQL,
            {"run": _RUN},
            needs="interval samples: run a profile with [sampling] sample_interval_ms > 0; the "
            "first iteration has no preceding quiet point and is left out",
        ),
        CannedQuery(
            "matrix-factors",
            "Slope per iteration, per server, per model load and per inference for each cell "
            "of a matrix (latest run per cell), with the cell's factors as columns.",
            _MATRIX_FACTORS_SQL,
            {
                "matrix": "only this matrix (profile name)",
                "metric": "only this metric",
                "upto": "the matrix as it stood at this run id (each cell's latest run <= it)",
            },
            needs="findings of matrix runs (soak run on a profile with a [matrix] table)",
        ),
        CannedQuery(
            "leftovers",
            "Runs that left stub processes or shared-memory regions behind, with counts.",
            _LEFTOVERS_SQL,
            {"run": _RUN},
        ),
        CannedQuery(
            "failures",
            "Validation failures by run, phase and instance, with the first message.",
            _FAILURES_SQL,
            {"run": _RUN},
        ),
        CannedQuery(
            "triton-warnings",
            "Distinct Triton warnings and errors (log prefix stripped) with counts and runs.",
            _TRITON_WARNINGS_SQL,
            {"run": _RUN},
        ),
    )
}


def coerce_param(value: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, anything else stays text (SQLite compares by type in JSON)."""
    if re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    try:
        number = float(value)
    except ValueError:
        return value
    return number if math.isfinite(number) else value


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """NAME=VALUE pairs as query parameters (numbers become numbers)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*", name.strip()):
            raise StoreError(f"--param {pair!r}: give NAME=VALUE, e.g. --param run=12")
        out[name.strip()] = coerce_param(value)
    return out


def matrix_names(db: sqlite_utils.Database) -> list[str]:
    """The matrices (profile names) that have runs in this database."""
    sql = "SELECT DISTINCT matrix FROM runs WHERE matrix IS NOT NULL ORDER BY matrix"
    return [row[0] for row in db.execute(sql)]


def _no_matrix(db: sqlite_utils.Database, name: str) -> StoreError:
    known = matrix_names(db)
    return StoreError(
        f"no matrix named {name!r} in this database"
        + (f" (matrices: {', '.join(known)})" if known else " (it holds no matrix runs)")
    )


def run_canned(
    db: sqlite_utils.Database, name: str, params: Mapping[str, Any] | None = None
) -> QueryResult:
    """A canned query by name; a run it names must exist (and 'latest' means the newest)."""
    query = CANNED.get(name)
    if query is None:
        raise StoreError(f"no canned query {name!r}; known: {', '.join(CANNED)}")
    given = dict(params or {})
    unknown = sorted(set(given) - set(query.params))
    if unknown:
        accepted = ", ".join(query.params) or "none"
        raise StoreError(
            f"query {name} takes no parameter {', '.join(unknown)} (it takes: {accepted})"
        )
    values = {p: given.get(p) for p in query.params}
    if values.get("run") is not None:
        values["run"] = resolve_run(db, values["run"])
    if values.get("matrix") is not None and values["matrix"] not in matrix_names(db):
        raise _no_matrix(db, values["matrix"])
    return run_query(db, query.sql, values)


# -- soak compare ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SlopeSide:
    """One run's Theil-Sen slope per iteration with its autocorrelation-widened 95 % interval.

    ``variance_factor`` is the Hamed-Rao factor the interval was widened by (1: none);
    ``warmup_cut`` is the index of the first sample used.
    """

    run_id: int
    n: int
    slope: float
    low: float
    high: float
    variance_factor: float
    warmup_cut: int

    @property
    def usable(self) -> bool:
        return all(math.isfinite(v) for v in (self.slope, self.low, self.high))


@dataclass(frozen=True)
class MetricComparison:
    """Base vs candidate for one metric; ``verdict`` is worse, better, same or 'no data'."""

    metric: str
    kind: str
    base: SlopeSide | None
    candidate: SlopeSide | None
    difference: float | None
    significant: bool
    verdict: str


@dataclass(frozen=True)
class CellComparison:
    cell: dict[str, Any]
    base_run: int
    candidate_run: int
    metrics: list[MetricComparison]


@dataclass(frozen=True)
class Comparison:
    """What ``soak compare`` prints; unmatched cells are listed, never compared."""

    base: str
    candidate: str
    cells: list[CellComparison]
    base_only: list[dict[str, Any]] = field(default_factory=list)
    candidate_only: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def side(s: SlopeSide | None) -> dict[str, Any] | None:
            if s is None:
                return None
            return {
                "run": s.run_id,
                "n": s.n,
                "slope": finite(s.slope),
                "low": finite(s.low),
                "high": finite(s.high),
                "variance_factor": finite(s.variance_factor),
                "warmup_cut": s.warmup_cut,
            }

        return {
            "base": self.base,
            "candidate": self.candidate,
            "rule": SIGNIFICANCE_RULE,
            "cells": [
                {
                    "cell": c.cell or None,
                    "base_run": c.base_run,
                    "candidate_run": c.candidate_run,
                    "metrics": [
                        {
                            "metric": m.metric,
                            "kind": m.kind,
                            "base": side(m.base),
                            "candidate": side(m.candidate),
                            "difference": finite(m.difference),
                            "significant": m.significant,
                            "verdict": m.verdict,
                        }
                        for m in c.metrics
                    ],
                }
                for c in self.cells
            ],
            "base_only": self.base_only,
            "candidate_only": self.candidate_only,
        }


SIGNIFICANCE_RULE = (
    "Theil-Sen slope per iteration of the quiet samples after each run's warm-up, with Sen's "
    "95% interval widened by the Hamed-Rao autocorrelation factor; 'worse' when the "
    "candidate's interval lies wholly above the base's, 'better' when wholly below, else 'same'."
)


def run_slopes(
    db: sqlite_utils.Database, run_id: int
) -> tuple[dict[str, SlopeSide], dict[str, str]]:
    """Every judged metric's slope for one run, and each metric's kind (memory/counter).

    The warm-up cut is the stored finding's where there is one (so compare agrees with the
    verdict), else computed as ``verdict.judge`` does. Sen's interval assumes independent
    noise; autocorrelated RSS makes it too narrow, so the normal quantile is scaled by the
    square root of the Hamed-Rao variance factor of the same series (Sen's interval is built
    from the variance of Kendall's S, which is what that factor corrects).
    """
    run = run_row(db, run_id)
    rules, warmup = rules_for(run)
    series = load_series(db, run_id, [r.metric for r in rules])
    cuts = {
        row["metric"]: row["warmup_cut"]
        for row in db.query("SELECT metric, warmup_cut FROM findings WHERE run_id = ?", [run_id])
        if row["warmup_cut"] is not None
    }
    out: dict[str, SlopeSide] = {}
    kinds: dict[str, str] = {}
    for rule in rules:
        kinds[rule.metric] = rule.kind
        s = series[rule.metric]
        values, iterations = s.values, s.iterations
        if rule.metric in cuts:
            cut = min(max(int(cuts[rule.metric]), 0), values.size)
        elif rule.kind == "memory":
            cut = cut_warmup(values, warmup, MIN_POINTS)
        else:
            cut = min(max(warmup, 0), values.size)
        x, y = iterations[cut:].astype(float), values[cut:]
        keep = np.isfinite(y)
        x, y = x[keep], y[keep]
        nan = math.nan
        if y.size < MIN_POINTS:
            out[rule.metric] = SlopeSide(run_id, int(y.size), nan, nan, nan, nan, cut)
            continue
        slope, low, high, factor = widened_slope(x, y)
        out[rule.metric] = SlopeSide(run_id, int(y.size), slope, low, high, factor, cut)
    return out, kinds


def widened_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Theil-Sen slope and its 95 % interval widened for autocorrelation, and the factor.

    Sen's bounds sit z * sqrt(Var S) ranks either side of the median pairwise slope; Hamed and
    Rao's factor f inflates Var S for autocorrelated noise, so the widened interval is Sen's
    with z * sqrt(f), i.e. Sen's interval at level alpha = erfc(z * sqrt(f / 2)).
    """
    factor = finite(mann_kendall(y, autocorrelation="hamed_rao").variance_factor) or 1.0
    factor = max(1.0, factor)
    alpha = math.erfc(Z95 * math.sqrt(factor) / math.sqrt(2.0))
    est = theil_sen(x, y, alpha)
    return est.slope, est.low, est.high, factor


def compare_sides(
    metric: str, kind: str, base: SlopeSide | None, candidate: SlopeSide | None
) -> MetricComparison:
    """The verdict of one metric under :data:`SIGNIFICANCE_RULE`."""
    if base is None or candidate is None or not base.usable or not candidate.usable:
        return MetricComparison(metric, kind, base, candidate, None, False, "no data")
    difference = candidate.slope - base.slope
    if candidate.low > base.high:
        verdict = "worse"
    elif candidate.high < base.low:
        verdict = "better"
    else:
        verdict = "same"
    return MetricComparison(metric, kind, base, candidate, difference, verdict != "same", verdict)


def _compare_runs_pair(
    db: sqlite_utils.Database, base: int, candidate: int, cell: dict[str, Any]
) -> CellComparison:
    base_slopes, base_kinds = run_slopes(db, base)
    cand_slopes, cand_kinds = run_slopes(db, candidate)
    kinds = {**cand_kinds, **base_kinds}
    metrics = list(base_slopes) + [m for m in cand_slopes if m not in base_slopes]
    return CellComparison(
        cell,
        base,
        candidate,
        [compare_sides(m, kinds[m], base_slopes.get(m), cand_slopes.get(m)) for m in metrics],
    )


def is_run_spec(spec: str) -> bool:
    """Whether a compare argument names a run (an id or 'latest') rather than a matrix."""
    return spec.strip().lower() == "latest" or re.fullmatch(r"\d+", spec.strip()) is not None


def matrix_runs(db: sqlite_utils.Database, spec: str) -> dict[str, int]:
    """The latest run of each cell of a matrix, by canonical cell JSON.

    ``NAME@N`` takes the matrix as it stood at run N (each cell's latest run with id <= N),
    so that two sessions of the same matrix (before and after a Triton upgrade) can be
    compared: ``soak compare nightly@120 nightly``.
    """
    name, _, upto = spec.partition("@")
    if upto and not re.fullmatch(r"\d+", upto):
        raise StoreError(f"{spec!r}: write a matrix as NAME or NAME@RUN_ID")
    sql, args = "SELECT id, cell FROM runs WHERE matrix = ?", [name]
    if upto:
        sql += " AND id <= ?"
        args.append(int(upto))
    rows = db.execute(sql + " ORDER BY id", args).fetchall()
    if not rows:
        if upto and name in matrix_names(db):
            raise StoreError(f"matrix {name!r} has no run up to run {upto}")
        raise _no_matrix(db, name)
    cells: dict[str, int] = {}
    for run_id, cell in rows:
        cells[json.dumps(parse_cell(cell), sort_keys=True)] = run_id
    return cells


def compare(
    db: sqlite_utils.Database, base: str, candidate: str, force: bool = False
) -> Comparison:
    """Compare two runs (ids or 'latest') or two matrices (NAME or NAME@RUN), metric by metric.

    Runs of different profiles, or different cells of one matrix, are refused unless
    ``force``: their slopes differ for reasons other than the software under test.
    """
    base_is_run, cand_is_run = is_run_spec(base), is_run_spec(candidate)
    if base_is_run != cand_is_run:
        raise StoreError(
            f"compare two runs or two matrices, not a run and a matrix ({base!r}, {candidate!r})"
        )
    if base_is_run:
        b, c = resolve_run(db, base), resolve_run(db, candidate)
        if b == c:
            raise StoreError(f"base and candidate are the same run ({b})")
        brow, crow = run_row(db, b), run_row(db, c)
        bcell, ccell = parse_cell(brow.get("cell")), parse_cell(crow.get("cell"))
        if not force and brow["profile"] != crow["profile"]:
            raise StoreError(
                f"runs {b} and {c} ran different profiles ({brow['profile']}, "
                f"{crow['profile']}); pass --force to compare them anyway"
            )
        if not force and bcell != ccell:
            raise StoreError(
                f"runs {b} and {c} are different cells ({cell_label(bcell)} vs "
                f"{cell_label(ccell)}); pass --force to compare them anyway"
            )
        return Comparison(f"run {b}", f"run {c}", [_compare_runs_pair(db, b, c, ccell)])
    bcells, ccells = matrix_runs(db, base), matrix_runs(db, candidate)
    bname, cname = base.partition("@")[0], candidate.partition("@")[0]
    if not force and bname != cname:
        raise StoreError(
            f"matrices {bname} and {cname} are different profiles; pass --force to compare "
            "them anyway"
        )
    if bcells == ccells:
        raise StoreError(
            f"{base} and {candidate} are the same runs; compare NAME@RUN (the matrix as it "
            "stood at run RUN) with NAME"
        )
    shared = [k for k in bcells if k in ccells]
    if not shared:
        raise StoreError(f"no cell of {base} matches a cell of {candidate}")
    cells = [_compare_runs_pair(db, bcells[k], ccells[k], json.loads(k)) for k in shared]
    return Comparison(
        base,
        candidate,
        cells,
        base_only=[json.loads(k) for k in bcells if k not in ccells],
        candidate_only=[json.loads(k) for k in ccells if k not in bcells],
    )


# -- soak browse ----------------------------------------------------------------------------


def datasette_command(
    db_path: str | Path, port: int = 8001, open_browser: bool = False
) -> list[str]:
    """The command that serves the database in Datasette on 127.0.0.1, read-only (immutable).

    Immutable mode never writes (no -wal/-shm, no locks) but does not see what a running run
    has not checkpointed yet; run ``soak browse`` again to see newer iterations.
    """
    if importlib.util.find_spec("datasette") is None:
        raise SoakError(
            "datasette is not installed: pip install 'soak[browse]' "
            "(or .venv/bin/pip install datasette), then run soak browse again"
        )
    cmd = [
        sys.executable,
        "-m",
        "datasette",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--immutable",
        str(db_path),
    ]
    if open_browser:
        cmd.append("--open")
    return cmd
