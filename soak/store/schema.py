"""The results database's schema, as data: every table's columns, keys and indexes, and the
forward migration that brings a database made by an earlier soak up to it.

Units are in the column names (`_bytes`, `_s`) so a query never has to guess. Every change so
far only added tables, columns and indexes, so migrating is the same step for every table:
create what is missing, add each missing column (old rows read NULL there: unknown, which the
analysis treats as no count). SCHEMA_VERSION changes only with a change an older soak could not
read. Version 2 stores each distinct event message once (`messages`, referred to by
`event_rows`) behind an `events` view of schema 1's columns: every reader of version 1 still
reads, but a soak of version 1 cannot write there, so it refuses the file by its version.
Within version 2, later soaks store a log line's prefix compactly and an iteration's interval
samples as one `phase_samples` row per phase (earlier rows stay as they were and still read):
the two made most of an iteration's bytes (issue 21).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlite_utils

from soak.phases import PHASES

SCHEMA_VERSION = 2
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
    # soak's client process, where it is not the server (target tritonserver); NULL otherwise
    "client_rss_bytes": int,
    "client_fds": int,
    "client_threads": int,
}
#: What server_samples keeps of each server process (the samples columns of that name).
SERVER_SAMPLE_COLUMNS = (
    "rss_bytes",
    "uss_bytes",
    "pss_bytes",
    "fds",
    "threads",
    "children",
    "children_rss_bytes",
    "stubs_alive",
    "shm_regions",
)
#: Iteration columns that count work units: the denominators of per-unit slopes.
UNIT_COLUMNS = {
    "server": "server_lifecycles",
    "model_load": "model_loads",
    "failed_load": "failed_loads",
    "inference": "inferences",
    "error": "errors",
    "response": "responses",
    "cache_hit": "cache_hits",
    "cache_insertion": "cache_insertions",
}
#: Units older runs do not count (their columns came with the scenarios or the Triton
#: features): NULL there.
LATER_UNITS = ("failed_load", "error", "response", "cache_hit", "cache_insertion")


@dataclass(frozen=True)
class Table:
    """One table as sqlite-utils creates it; ``columns`` in their order in a new database."""

    columns: dict[str, type]
    pk: str | tuple[str, ...] | None = None
    foreign_keys: tuple[tuple[str, str, str], ...] = ()
    not_null: frozenset[str] = field(default_factory=frozenset)


_BY_RUN = (("run_id", "runs", "id"),)


def phase_max_column(column: str) -> str:
    """phase_samples' name for the largest value of a samples column: rss_max_bytes, fds_max."""
    return column.replace("_bytes", "_max_bytes") if column.endswith("_bytes") else f"{column}_max"


#: The columns of the `events` view, as the table of that name had them before schema 2.
EVENT_COLUMNS: dict[str, type] = {
    "id": int,
    "run_id": int,
    "iteration": int,
    "t": float,
    "kind": str,
    "instance": int,
    "phase": str,
    "message": str,
    "count": int,  # how many times it came (Triton's log lines); NULL: once
    "last_t": float,  # when it last came, where count > 1
}
#: A Triton log line's glog prefix ('E1203 07:04:27.330752 29363 server.cc:241] ') as
#: event_rows keep it (soak.store.rows.compact_log_head): the level and thread in `log_head`
#: ('E 29363'), the clock rebuilt from `t` and the writer's UTC offset then, the source with
#: the message text; earlier rows keep the whole prefix in `message_prefix`.
LOG_CLOCK_SQL = (
    "strftime('%m%d %H:%M:%S', CAST(e.t AS INTEGER) + e.log_utc_offset_s, 'unixepoch') "
    "|| printf('.%06d', CAST(round((e.t - CAST(e.t AS INTEGER)) * 1000000) AS INTEGER))"
)
LOG_HEAD_SQL = f"substr(e.log_head, 1, 1) || {LOG_CLOCK_SQL} || substr(e.log_head, 2) || ' '"
#: The kind of a Triton log line's event by its glog level (soak.triton.facts.EVENT_KINDS): a
#: row with a `log_head` leaves `kind` NULL where it is this one.
LOG_LEVEL_KINDS = {"W": "triton_warning", "E": "triton_error"}
_KIND_SQL = (
    "COALESCE(e.kind, CASE substr(e.log_head, 1, 1) "
    + " ".join(f"WHEN '{level}' THEN '{kind}'" for level, kind in LOG_LEVEL_KINDS.items())
    + " END)"
)
EVENTS_VIEW = (
    f"SELECT e.id, e.run_id, e.iteration, e.t, {_KIND_SQL} AS kind, e.instance, e.phase, "
    f"CASE WHEN e.log_head IS NOT NULL THEN {LOG_HEAD_SQL} || m.text "
    "WHEN e.message_prefix IS NULL THEN m.text ELSE e.message_prefix || m.text END "
    "AS message, e.count, e.last_t FROM event_rows e LEFT JOIN messages m ON m.id = e.message_id"
)
#: What interval samples (`sample_interval_ms`) keep of each phase of an iteration: one
#: phase_samples row, its median RSS and the largest value of each other column, so an
#: iteration costs the same whatever the interval (soak.store.rows.phase_rows).
PHASE_SAMPLE_MAX = (
    "rss_bytes",
    "fds",
    "threads",
    "children",
    "children_rss_bytes",
    "stubs_alive",
    "shm_regions",
)

#: Every table, in creation order (a table's foreign keys name tables above it).
TABLES: dict[str, Table] = {
    "meta": Table({"key": str, "value": str}, pk="key"),
    "runs": Table(
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
            "triton_home": str,
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
        not_null=frozenset({"profile", "status", "started_at"}),
    ),
    "iterations": Table(
        {
            "run_id": int,
            "iteration": int,
            "ended_at": float,
            "wall_s": float,
            "server_lifecycles": int,
            "model_loads": int,
            "failed_loads": int,
            "inferences": int,
            "errors": int,
            "responses": int,
            "cache_hits": int,
            "cache_insertions": int,
            # the servers' Prometheus counters (tritonserver target; NULL in-process)
            "metrics_successes": int,
            "metrics_failures": int,
            "metrics_failure_reasons": str,  # JSON: failures by reason
            "metrics_pending": int,
            "failures": int,
            **{f"{p}_{stat}_s": float for p in PHASES for stat in ("sum", "max")},
        },
        pk=("run_id", "iteration"),
        foreign_keys=_BY_RUN,
    ),
    "samples": Table(
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
        foreign_keys=_BY_RUN,
    ),
    "gpu_samples": Table(
        {
            "sample_id": int,
            "device": int,
            "name": str,
            "used_bytes": int,
            "total_bytes": int,
            "process_bytes": int,
        },
        pk=("sample_id", "device"),
        foreign_keys=(("sample_id", "samples", "id"),),
    ),
    "heap_types": Table(
        {"run_id": int, "iteration": int, "type_name": str, "count": int, "increase": int},
        foreign_keys=_BY_RUN,
    ),
    # Events (soak.store.rows): each distinct message text stored once per database in
    # `messages`, the rows referring to it; `events` is a view with the columns of before.
    "messages": Table({"id": int, "text": str}, pk="id", not_null=frozenset({"text"})),
    "event_rows": Table(
        {
            **{c: t for c, t in EVENT_COLUMNS.items() if c != "message"},
            "message_id": int,
            "message_prefix": str,  # a Triton log line's glog prefix (time, thread): varies
            "log_head": str,  # or its level and thread (LOG_CLOCK_SQL)
            "log_utc_offset_s": int,
        },
        pk="id",
        foreign_keys=(*_BY_RUN, ("message_id", "messages", "id")),
    ),
    "phase_samples": Table(
        {
            "run_id": int,
            "iteration": int,
            "phase": str,
            "samples": int,
            "rss_median_bytes": int,
            **{phase_max_column(c): SAMPLE_COLUMNS[c] for c in PHASE_SAMPLE_MAX},
        },
        foreign_keys=_BY_RUN,
    ),
    "findings": Table(
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
        foreign_keys=_BY_RUN,
    ),
    # Allocation sites (attribution, soak.sampling.memray_sites): one row per kept site of a run;
    # site_samples: live bytes and allocations of each site at each quiet point after the
    # warm-up. site_id 0 is the sum over every tracked allocation.
    "sites": Table(
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
        foreign_keys=_BY_RUN,
    ),
    "site_samples": Table(
        {"run_id": int, "iteration": int, "site_id": int, "live_bytes": int, "live_count": int},
        pk=("run_id", "site_id", "iteration"),
        foreign_keys=_BY_RUN,
    ),
    # Each server process of a run apart (target tritonserver), at each quiet point: the
    # samples row sums them. `server` is its index among the iteration's live servers.
    "server_samples": Table(
        {
            "run_id": int,
            "iteration": int,
            "server": int,
            "pid": int,
            **{c: SAMPLE_COLUMNS[c] for c in SERVER_SAMPLE_COLUMNS},
        },
        pk=("run_id", "iteration", "server"),
        foreign_keys=_BY_RUN,
    ),
}
#: Indexes earlier soaks made that today's drops: (run_id, kind) on event_rows took ~40 bytes
#: a row on disk, its pages half full as kinds interleave; no read needs it.
RETIRED_INDEXES = (("event_rows", ("run_id", "kind")),)
#: (table, columns) of every index.
INDEXES = (
    ("samples", ("run_id", "kind", "iteration")),
    # By iteration, not kind: rows come in that order, so its pages fill (issue 21).
    ("event_rows", ("run_id", "iteration")),
    ("heap_types", ("run_id", "iteration")),
    ("runs", ("profile", "started_at")),
    ("runs", ("status",)),
    ("findings", ("metric", "verdict")),
)


def ensure_schema(db: sqlite_utils.Database) -> None:
    """Make ``db`` hold today's schema, whatever earlier soak made it: every missing table and
    index created, every missing column added; then record the schema version. Call it inside
    one transaction, so a database is migrated whole or not at all."""
    for name, table in TABLES.items():
        if db[name].exists():
            _add_missing_columns(db, name, table.columns)
            continue
        db[name].create(
            table.columns,
            pk=table.pk,
            foreign_keys=list(table.foreign_keys),
            not_null=set(table.not_null),
        )
    for name, columns in INDEXES:
        db[name].create_index(list(columns), if_not_exists=True)
    for name, columns in RETIRED_INDEXES:
        db.execute(f"DROP INDEX IF EXISTS idx_{name}_{'_'.join(columns)}")
    db["messages"].create_index(["text"], unique=True, if_not_exists=True)
    if "events" in db.table_names():
        _move_events(db)
    _ensure_view(db, "events", EVENTS_VIEW)
    db["meta"].upsert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")


def _ensure_view(db: sqlite_utils.Database, name: str, sql: str) -> None:
    """The view as today's soak defines it: one made by an earlier soak is replaced (a view
    holds no rows, and today's reads every row the earlier one did)."""
    row = db.execute("SELECT sql FROM sqlite_master WHERE type = 'view' AND name = ?", [name])
    found = row.fetchone()
    if found is not None and found[0].endswith(sql):
        return
    if found is not None:
        db.execute(f"DROP VIEW {name}")
    db.create_view(name, sql)


def _add_missing_columns(db: sqlite_utils.Database, table: str, columns: dict[str, type]) -> None:
    """Columns added after a database was made: old rows read NULL there (unknown), which the
    analysis treats as no count."""
    have = db[table].columns_dict
    for name, kind in columns.items():
        if name not in have:
            db[table].add_column(name, kind)


def _move_events(db: sqlite_utils.Database) -> None:
    """Schema 1's plain `events` table into event_rows and messages, ids kept, so every old
    row reads the same through the `events` view."""
    _add_missing_columns(db, "events", EVENT_COLUMNS)
    db.execute(
        "INSERT OR IGNORE INTO messages (text) "
        "SELECT message FROM events WHERE message IS NOT NULL ORDER BY id"
    )
    keep = [c for c in EVENT_COLUMNS if c != "message"]
    db.execute(
        f"INSERT INTO event_rows ({', '.join(keep)}, message_id) "
        f"SELECT {', '.join('e.' + c for c in keep)}, m.id FROM events e "
        "LEFT JOIN messages m ON m.text = e.message ORDER BY e.id"
    )
    db.execute("DROP TABLE events")
