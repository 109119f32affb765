"""Rows to and from the results database: samples and events as the samplers and the
supervisor report them, findings as the analysis produces them (NaN stored as NULL and back)."""

from __future__ import annotations

import calendar
import json
import math
import re
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from soak.analysis.verdict import Finding
from soak.formatting import finite, plain
from soak.store.schema import PHASE_SAMPLE_MAX, phase_max_column

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


def phase_rows(samples: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """An iteration's interval samples as `phase_samples` rows: one per (iteration, phase),
    in the order they came, with how many samples, their median RSS (the mean of the middle
    two for an even count, as the phase-memory query takes it) and each column's largest
    value. A sample every 250 ms stored whole cost ~100 bytes each: most of an iteration."""
    groups: dict[tuple[Any, Any], list[Mapping[str, Any]]] = {}
    for sample in samples:
        groups.setdefault((sample.get("iteration"), sample.get("phase")), []).append(sample)
    rows = []
    for (iteration, phase), group in groups.items():
        rss = [s["rss_bytes"] for s in group if s.get("rss_bytes") is not None]
        row: dict[str, Any] = {
            "iteration": iteration,
            "phase": phase,
            "samples": len(group),
            "rss_median_bytes": round(statistics.median(rss)) if rss else None,
        }
        for column in PHASE_SAMPLE_MAX:
            values = [s[column] for s in group if s.get(column) is not None]
            row[phase_max_column(column)] = max(values) if values else None
        rows.append(row)
    return rows


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


def finding_row(f: Finding) -> dict[str, Any]:
    """A finding as a findings row: NaN and infinities as NULL, per-unit slopes as JSON."""
    row = plain(asdict(f))
    row["slopes_per_unit"] = json.dumps(row["slopes_per_unit"])
    row["analyzed_at"] = time.time()
    return row


def slopes_from_json(text: Any) -> dict[str, float | None]:
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
            k: (nan if v is None else v)
            for k, v in slopes_from_json(row.get("slopes_per_unit")).items()
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


_GLOG_HEAD = re.compile(r"^[WEIF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [^\]]*\] ")


_GLOG_PARTS = re.compile(r"^([WEIF])\d{4} \d\d:\d\d:\d\d\.\d{6}( +\d+) ")


def compact_log_head(head: str, t: float) -> tuple[dict[str, Any], str] | None:
    """A glog prefix (`split_message`) as event_rows columns that rebuild it from the row's
    `t` (soak.store.schema.LOG_CLOCK_SQL): its level and thread in ``log_head``, the local
    clock as ``t`` plus the UTC offset then; the source ('server.cc:241] ') goes with the
    message text, which stays the same line after line. None when the head is not in that
    form (the caller keeps it whole); else the columns and the source. The prefix whole was
    ~45 of an event row's ~100 bytes."""
    parts = _GLOG_PARTS.match(head)
    if parts is None:
        return None
    whole = int(t)
    offset = calendar.timegm(time.localtime(whole)) - whole
    columns = {"log_head": parts.group(1) + parts.group(2), "log_utc_offset_s": offset}
    return columns, head[parts.end() :]


def split_message(text: str) -> tuple[str | None, str]:
    """A Triton log line's glog prefix ('W1125 14:03:22.123456 42 file.cc:7] ': time and
    thread, different each line) and the rest, stored once per database; None and the whole
    text for any other message. The two concatenated are the text exactly."""
    head = _GLOG_HEAD.match(text)
    return (head.group(0), text[head.end() :]) if head else (None, text)
