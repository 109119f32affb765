"""`soak show`: one run's header, findings, events grouped by kind, and phase timings."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlite_utils

from soak.analysis.sites import SiteFinding, judge_sites, site_notes
from soak.judging import purpose_of, rules_for, site_rule_for, verdict_note, verdict_rank
from soak.store import PHASES, load_site_series, run_row
from soak.store.rows import finding_from_row
from soak.triage.abandoned import display_status, median_walls
from soak.triage.lookup import iso_time, parse_cell, resolve_run, run_duration
from soak.triton.facts import EVENT_KINDS as TRITON_EVENT_KINDS
from soak.triton.facts import log_message as triton_message
from soak.units import finite

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
    verdict_note: str = ""  # why the verdict is inconclusive (soak.judging.verdict_note)

    def as_dict(self) -> dict[str, Any]:
        header = {k: v for k, v in self.run.items() if k not in ("profile_text", "config")}
        header["cell"] = parse_cell(self.run.get("cell")) or None
        for key in ("started_at", "ended_at", "heartbeat_at"):
            header[key.replace("_at", "")] = iso_time(self.run.get(key))
        header["stored_status"] = self.run.get("status")
        header["status"] = self.status
        header["abandoned_reason"] = self.abandoned_reason or None
        header["verdict_note"] = self.verdict_note or None
        header["duration_s"] = run_duration(self.run)
        findings, sites = [], []
        for rows, out in ((self.findings, findings), (self.sites, sites)):
            for row in rows:
                row = dict(row)
                row["slopes_per_unit"] = _units(row.get("slopes_per_unit"))
                out.append(row)
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
            # only for a run with attribution, so that the JSON of any other run is unchanged
            **({"sites": sites, "site_notes": self.site_notes} if sites else {}),
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
        rules_for(run)[1],
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
    )


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
    total = load_site_series(db, run["id"]).get(0)
    held = judge_sites([total], site_rule_for(run))[0].bytes if total is not None else None
    return site_notes(
        [finding_from_row(f) for f in findings], held, [site_finding_from_row(s) for s in sites]
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
