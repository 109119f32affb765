"""`soak show`: one run's header, findings, events grouped by kind, and phase timings."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlite_utils

from soak.analysis.run_verdict import verdict_note, verdict_rank
from soak.analysis.site_verdict import SiteFinding, notes_with_total
from soak.formatting import finite
from soak.run_settings import purpose_of, site_rule_for, warmup_of
from soak.store import PHASES, load_site_series, run_row
from soak.store.rows import finding_from_row
from soak.triage.abandoned import display_status, median_walls
from soak.triage.lookup import resolve_run
from soak.triton.facts import EVENT_KINDS as TRITON_EVENT_KINDS
from soak.triton.facts import log_message as triton_message

#: Messages shown per event kind in ``soak show`` (stack dumps are always shown in full).
EVENT_EXAMPLES = 3


_EVENT_ORDER = (
    "crash",
    "signal",
    "hang",
    "stack_dump",
    "error",
    "failure",
    "leftover_stub",
    "leftover_shm",
    "leftover_port",
    "cleanup",
    "triton_error",
    "triton_warning",
)


_FULL_EVENT_KINDS = {"stack_dump", "crash", "signal", "hang", "error"}


_TRITON_KINDS = set(TRITON_EVENT_KINDS.values())


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


#: What `soak show` states a slope of for each server process apart (server_samples).
SERVER_SLOPE_METRICS = (
    "rss_bytes",
    "uss_bytes",
    "fds",
    "threads",
    "stubs_alive",
    "children_rss_bytes",
)


@dataclass(frozen=True)
class ServerSlopes:
    """One server process of a run (target tritonserver), judged apart from the others: the
    Theil-Sen slope per iteration of each SERVER_SLOPE_METRICS after the warm-up (None with
    fewer than two samples)."""

    server: int
    pids: list[int]
    iterations: int
    slopes: dict[str, float | None]


@dataclass(frozen=True)
class RunDetail:
    """Everything ``soak show`` prints about one run."""

    run: dict[str, Any]
    status: str
    abandoned_reason: str
    findings: list[dict[str, Any]]
    events: list[EventGroup]
    phases: list[PhaseTiming]
    sites: list[dict[str, Any]] = field(default_factory=list)  # site findings (attribution)
    site_notes: list[str] = field(default_factory=list)  # what no site can explain
    verdict_note: str = ""  # why the verdict is inconclusive (soak.analysis.run_verdict)
    # Totals of the feature units (responses, cache); {} for a run stored before them.
    work: dict[str, int] = field(default_factory=dict)
    servers: list[ServerSlopes] = field(default_factory=list)  # each server process apart


def _event_groups(db: sqlite_utils.Database, run_id: int) -> list[EventGroup]:
    rows = list(
        db.query(
            "SELECT kind, iteration, instance, phase, message, COALESCE(count, 1) AS n "
            "FROM events WHERE run_id = ? "
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
                counts[text] = counts.get(text, 0) + e["n"]
                first.setdefault(text, e)
            messages = [
                EventMessage(
                    t, counts[t], first[t]["iteration"], first[t]["instance"], first[t]["phase"]
                )
                for t in list(first)[:EVENT_EXAMPLES]
            ]
            distinct = len(first)
        groups.append(EventGroup(kind, sum(e["n"] for e in events), messages, distinct))
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
    walls = median_walls(db, [run_id])
    status, reason = display_status(run, walls.get(run_id), now)
    rows = list(db.query("SELECT * FROM findings WHERE run_id = ?", [run_id]))
    findings = [f for f in rows if f.get("kind") != "site"]
    findings.sort(key=lambda f: (verdict_rank(f["verdict"]), f["metric"]))
    sites = _site_rows(db, run_id, rows)
    note = verdict_note(
        [finding_from_row(f) for f in findings],
        run.get("verdict") or "",
        purpose_of(run) if run.get("status") == "passed" else "leaks",
        int(run.get("iterations_done") or 0),
        warmup_of(run),
    )
    return RunDetail(
        run,
        status,
        reason,
        findings,
        _event_groups(db, run_id),
        _phase_timings(db, run_id),
        sites,
        _site_notes(db, run, findings, sites) if sites else [],
        note,
        _work(db, run_id),
        server_slopes(db, run_id, warmup_of(run)),
    )


def server_slopes(db: sqlite_utils.Database, run_id: int, warmup: int) -> list[ServerSlopes]:
    """Each server process's slopes after the warm-up ([] in-process: no server_samples rows,
    or a database made before the table)."""
    from soak.analysis.slope import theil_sen

    if "server_samples" not in db.table_names():
        return []
    cols = ", ".join(SERVER_SLOPE_METRICS)
    rows = db.execute(
        f"SELECT server, pid, iteration, {cols} FROM server_samples "
        "WHERE run_id = ? AND iteration >= ? ORDER BY server, iteration",
        [run_id, warmup],
    ).fetchall()
    by_server: dict[int, list[tuple]] = {}
    for row in rows:
        by_server.setdefault(row[0], []).append(row)
    out = []
    for server, got in by_server.items():
        pids = list(dict.fromkeys(r[1] for r in got))
        x = np.array([r[2] for r in got], float)
        slopes: dict[str, float | None] = {}
        for k, metric in enumerate(SERVER_SLOPE_METRICS):
            pairs = [(xi, r[3 + k]) for xi, r in zip(x, got, strict=True) if r[3 + k] is not None]
            if len(pairs) < 2:
                slopes[metric] = None
                continue
            xs, ys = zip(*pairs, strict=True)
            slopes[metric] = finite(theil_sen(np.array(xs), np.array(ys, float)).slope)
        out.append(ServerSlopes(server, pids, len(got), slopes))
    return out


#: The counts `soak show` totals beside the inferences: what a request brought back.
WORK_COLUMNS = ("inferences", "responses", "cache_hits", "cache_insertions")


def _work(db: sqlite_utils.Database, run_id: int) -> dict[str, int]:
    """The run's totals of WORK_COLUMNS; {} when it counted no responses (stored before)."""
    stored = {row[1] for row in db.execute("PRAGMA table_info(iterations)").fetchall()}
    if not set(WORK_COLUMNS) <= stored:
        return {}
    sums = ", ".join(f"SUM({c})" for c in WORK_COLUMNS)
    row = db.execute(f"SELECT {sums} FROM iterations WHERE run_id = ?", [run_id]).fetchone()
    if row is None or row[1] is None:
        return {}
    return {c: int(v or 0) for c, v in zip(WORK_COLUMNS, row, strict=True)}


# -- allocation sites (attribution) ---------------------------------------------------------
def _site_rows(
    db: sqlite_utils.Database, run_id: int, findings: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The run's site findings, each with its site's stack summary, growing ones first."""
    if not db["sites"].exists():
        return []
    sites = {
        f"site:{r['site_id']}": r
        for r in db.query(
            "SELECT site_id, summary, thread, phase, soak_call, python_frame FROM sites "
            "WHERE run_id = ?",
            [run_id],
        )
    }
    out = [{**sites.get(f["metric"], {}), **f} for f in findings if f.get("kind") == "site"]
    out.sort(key=lambda f: (verdict_rank(f["verdict"]), -(finite(f["slope"]) or 0)))
    return out


def _site_notes(
    db: sqlite_utils.Database,
    run: dict[str, Any],
    findings: list[dict[str, Any]],
    sites: list[dict[str, Any]],
) -> list[str]:
    """What no site can explain (stubs that grow, growth no live allocation holds), as
    `soak analyze` said it: from the stored findings and the stored sum of every traced
    allocation (site 0)."""
    return notes_with_total(
        [finding_from_row(f) for f in findings],
        load_site_series(db, run["id"]).get(0),
        [site_finding_from_row(s) for s in sites],
        site_rule_for(run),
    )


def site_finding_from_row(row: Mapping[str, Any]) -> SiteFinding:
    """A stored site finding (joined with its site) as the analysis's :class:`SiteFinding`."""
    return SiteFinding(
        site_id=int(row.get("site_id") or str(row["metric"]).removeprefix("site:")),
        summary=row.get("summary") or row["metric"],
        thread=row.get("thread") or "?",
        python_frame=row.get("python_frame"),
        verdict=row.get("verdict") or "no_data",
        bytes=finding_from_row(row),
        count_slope=math.nan,
        reason=row.get("reason") or "",
    )
