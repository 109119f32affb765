"""The schemas earlier soaks made, and one small database of each under tests/data/store_schemas/.

Read off `git log -p soak/store.py` (each schema below names the commit whose `_schema` made
it) and written out literally, so that a change to today's schema never changes them. Every
one has meta.schema_version = 1: the version never moved, the columns did. Regenerate the
databases (after adding a schema here) with:

    python -m tests.store.old_schemas
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

DATA = Path(__file__).resolve().parent.parent / "data" / "store_schemas"
PHASES = (  # soak.phases as it was in every schema below
    "server_new",
    "wait_ready",
    "load",
    "infer",
    "statistics",
    "unload",
    "isolation",
    "stop",
    "delete",
)
RUNS_1 = {
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
    "supervisor_pid": int,
    "worker_pid": int,
    "config": str,
}
ITERATIONS_1 = {
    "run_id": int,
    "iteration": int,
    "ended_at": float,
    "wall_s": float,
    "server_lifecycles": int,
    "model_loads": int,
    "inferences": int,
    "failures": int,
    **{f"{p}_{stat}_s": float for p in PHASES for stat in ("sum", "max")},
}
SAMPLES_1 = {
    "id": int,
    "run_id": int,
    "iteration": int,
    "kind": str,
    "phase": str,
    "t": float,
    "elapsed_s": float,
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
SITES_SLICE_1 = {
    "run_id": int,
    "site_id": int,
    "stack_key": str,
    "stack_text": str,
    "frames": str,
    "summary": str,
    "python_frame": str,
    "thread": str,
}
SITES = {**dict(list(SITES_SLICE_1.items())[:-1]), "soak_call": str, "phase": str, "thread": str}
SITE_SAMPLES = {
    "run_id": int,
    "iteration": int,
    "site_id": int,
    "live_bytes": int,
    "live_count": int,
}
BY_RUN = [("run_id", "runs", "id")]


def _after(columns: dict[str, type], anchor: str, new: dict[str, type]) -> dict[str, type]:
    """``columns`` with ``new`` inserted after ``anchor``, where a later soak put them."""
    out: dict[str, type] = {}
    for name, kind in columns.items():
        out[name] = kind
        if name == anchor:
            out.update(new)
    return out


RUNS_RAY = _after(RUNS_1, "host", {"ray_node_id": str})
SCENARIO_RUNS = {"scenario": str, "behaviour": str, "error_fraction": float}
ITERATIONS_UNITS = _after(
    _after(ITERATIONS_1, "model_loads", {"failed_loads": int}), "inferences", {"errors": int}
)


@dataclass(frozen=True)
class OldSchema:
    name: str
    commit: str  # the commit whose soak/store.py made it
    runs: dict[str, type]
    iterations: dict[str, type]
    sites: dict[str, type] | None  # None: before attribution

    @property
    def path(self) -> Path:
        return DATA / f"{self.name}.db"


#: In the order they were made; the first line of each is main's, the rest side branches' that
#: were merged (a results database made on one of those branches exists too).
SCHEMAS = (
    OldSchema("initial", "acbc157", RUNS_1, ITERATIONS_1, None),
    OldSchema("attribution", "b6e3147", RUNS_1, ITERATIONS_1, SITES),
    OldSchema("ray", "86b4057", RUNS_RAY, ITERATIONS_1, SITES),
    OldSchema(
        "scenarios",
        "8fe1b8e",
        _after(RUNS_RAY, "datatype", SCENARIO_RUNS),
        ITERATIONS_UNITS,
        SITES,
    ),
    OldSchema("branch_attribution_slice_1", "b762867", RUNS_1, ITERATIONS_1, SITES_SLICE_1),
    OldSchema("branch_ray", "a90fde8", RUNS_RAY, ITERATIONS_1, None),
    OldSchema(
        "branch_scenarios",
        "278ed9b",
        _after(RUNS_1, "datatype", SCENARIO_RUNS),
        ITERATIONS_UNITS,
        None,
    ),
)


def create(db: sqlite_utils.Database, schema: OldSchema) -> None:
    """The tables and indexes as that soak's `_schema` created them in a new file."""
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["runs"].create(schema.runs, pk="id", not_null={"profile", "status", "started_at"})
    db["iterations"].create(schema.iterations, pk=("run_id", "iteration"), foreign_keys=BY_RUN)
    db["samples"].create(SAMPLES_1, pk="id", foreign_keys=BY_RUN)
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
    )
    db["heap_types"].create(
        {"run_id": int, "iteration": int, "type_name": str, "count": int, "increase": int},
        foreign_keys=BY_RUN,
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
        foreign_keys=BY_RUN,
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
        foreign_keys=BY_RUN,
    )
    if schema.sites is not None:
        db["sites"].create(schema.sites, pk=("run_id", "site_id"), foreign_keys=BY_RUN)
        db["site_samples"].create(
            SITE_SAMPLES, pk=("run_id", "site_id", "iteration"), foreign_keys=BY_RUN
        )
    for table, cols in (
        ("samples", ["run_id", "kind", "iteration"]),
        ("events", ["run_id", "kind"]),
        ("heap_types", ["run_id", "iteration"]),
        ("runs", ["profile", "started_at"]),
        ("runs", ["status"]),
        ("findings", ["metric", "verdict"]),
    ):
        db[table].create_index(cols)
    db["meta"].insert({"key": "schema_version", "value": "1"})


def value_for(column: str, kind: type, k: int) -> Any:
    """A value for every column, different per row ``k`` and per column, of the column's type."""
    seed = sum(map(ord, column)) + 1000 * k
    if kind is int:
        return seed
    if kind is float:
        return seed + 0.25
    return f"{column}-{k}"


def full_row(columns: dict[str, type], k: int, **fixed: Any) -> dict[str, Any]:
    row = {c: WORDS.get(c, value_for(c, t, k)) for c, t in columns.items()}
    return {**row, **fixed}


#: Run columns other code parses (JSON, TOML) or reads as one of a few words, as soak wrote them.
JSON_RUN = {
    "profile_text": "servers = 1\niterations = 2\nwarmup = 0\n",
    "cell": "{}",
    "config": '{"run": {"iterations": 2, "warmup": 0}}',
    "verdict": "pass",
    "memory_type": "system",
    "instance_kind": "cpu",
    "datatype": "int32",
}
WORDS = {"scenario": "servers", "behaviour": "correct", "phase": "load"}


def fill(db: sqlite_utils.Database, schema: OldSchema) -> None:
    """One finished run of two iterations, every column of every table given a value."""
    run = full_row(schema.runs, 0, id=1, profile="old", status="passed", **JSON_RUN)
    db["runs"].insert(run)
    for i in range(2):
        db["iterations"].insert(full_row(schema.iterations, i, run_id=1, iteration=i))
        sample = full_row(SAMPLES_1, i, id=i + 1, run_id=1, iteration=i, kind="quiet")
        db["samples"].insert(sample)
        gpu = {"name": str, "used_bytes": int, "total_bytes": int, "process_bytes": int}
        db["gpu_samples"].insert(full_row(gpu, i, sample_id=i + 1, device=0))
        heap = {"type_name": str, "count": int, "increase": int}
        db["heap_types"].insert(full_row(heap, i, run_id=1, iteration=i))
        ev = {"t": float, "kind": str, "instance": int, "phase": str, "message": str}
        db["events"].insert(full_row(ev, i, id=i + 1, run_id=1, iteration=i, kind="failure"))
        if schema.sites is not None:
            db["site_samples"].insert(full_row(SITE_SAMPLES, i, run_id=1, site_id=1, iteration=i))
    finding = {c: t for c, t in db["findings"].columns_dict.items()}
    db["findings"].insert(
        full_row(
            finding,
            0,
            run_id=1,
            metric="rss_bytes",
            kind="memory",
            verdict="pass",
            slopes_per_unit="{}",
        )
    )
    if schema.sites is not None:
        db["sites"].insert(full_row(schema.sites, 0, run_id=1, site_id=1, frames="[]"))


def write(schema: OldSchema) -> Path:
    """The small database of ``schema``: 1 KiB pages, rollback journal, no -wal beside it."""
    path = schema.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size = 1024")
    db = sqlite_utils.Database(conn)
    create(db, schema)
    fill(db, schema)
    conn.commit()
    conn.execute("VACUUM")
    conn.close()
    return path


if __name__ == "__main__":
    for s in SCHEMAS:
        print(write(s), s.path.stat().st_size, "bytes")
