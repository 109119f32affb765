"""Native allocation sites (memray): trace the worker from the end of its warm-up, then read
back, per allocation site, the bytes and allocations still live at each quiet point.

Tracking runs in the worker (`start_tracker`, `stop_tracker`); reading runs in the supervisor
once the worker has ended (`read_sites`). Nothing here touches Triton or SQL.

How memray's data meets the quiet points (measured with memray 1.20): the tracker writes a
memory record every `MEMORY_INTERVAL_MS` into the same stream as the allocations, and its
reader numbers them; every allocation says before which record it was made and before which
it was freed (`Interval.allocated_before_snapshot`, `deallocated_before_snapshot`). An
allocation is live at record j when `allocated <= j < deallocated`. The supervisor knows when
each quiet point began (the worker's Quiet arrived) and ended (Continue sent) and holds it open
for at least `MIN_QUIET_S`, so at least one record falls inside; nothing of the workload runs
then, and the first record in the window is the quiet point's state.

Reading costs two passes of memray's reader over every allocation and free (its FileReader
finds the high-water mark, then the temporal pass): about 64 million records, 25 s, for 250
iterations of the cpu profile. What the workload allocates is what is read, so soak polls
Triton sparingly (soak.workload.polling).

What memray does not see: a `malloc` reached through a ctypes function pointer (it hooks the
import tables of loaded libraries), and the python-backend stubs (separate processes).
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from soak.sampling.allocation_sites import SHOWN_FRAMES, Frame, Site, SiteCapture, rank_by_growth
from soak.sampling.memray_frames import FrameMaker, site_frames

log = logging.getLogger(__name__)

CAPTURE_FILE = "memray.bin"
#: Every memory record is a snapshot the reader's temporal pass keys allocations on: 20 ms
#: rather than 10 cut that pass by a sixth (250 cpu iterations), and a quiet point held open
#: `MIN_QUIET_S` still holds two records.
MEMORY_INTERVAL_MS = 20
#: A quiet point is held open this long at least, so that memray's records fall inside it.
MIN_QUIET_S = 0.05


def unavailable() -> str | None:
    """Why memray cannot trace here, or None when it can."""
    if not sys.platform.startswith("linux") and sys.platform != "darwin":
        return f"memray runs on Linux and macOS only, not on {sys.platform}"
    try:
        import memray  # noqa: F401
    except ImportError as exc:
        return f"memray is not installed ({exc}); `pip install memray`"
    return None


def start_tracker(path: Path) -> Any:
    """Trace every thread of this process (Triton's C++ threads too) into `path`, with native
    stacks; the python-backend stubs are exec'd children and stay untraced."""
    import memray

    Path(path).unlink(missing_ok=True)
    tracker = memray.Tracker(
        str(path),
        native_traces=True,
        follow_fork=False,
        memory_interval_ms=MEMORY_INTERVAL_MS,
    )
    tracker.__enter__()
    return tracker


def stop_tracker(tracker: Any) -> None:
    """Flush and close the capture; must run before the worker leaves with os._exit."""
    tracker.__exit__(None, None, None)


def _quiet_snapshots(
    times_ms: np.ndarray, windows: Mapping[int, tuple[float, float]]
) -> tuple[list[int], np.ndarray]:
    """(iterations, snapshot index) for each quiet window that holds a memory record."""
    iterations, indices = [], []
    for it in sorted(windows):
        begin, end = windows[it]
        lo = int(np.searchsorted(times_ms, math.ceil(begin * 1000) + 1, side="left"))
        if lo < times_ms.size and times_ms[lo] < math.floor(end * 1000):
            iterations.append(it)
            indices.append(lo)
    return iterations, np.asarray(indices, dtype=np.int64)


#: A record must hold something at this many quiet points to be keyed on a site: one held
#: at a single quiet point is a temporary that straddled it (2/3 of the records with anything
#: live in a 250-iteration cpu run), counted in the total but never part of a trend.
MIN_HELD_POINTS = 2


@dataclass
class _Live:
    """Every interval of the capture with something live at a quiet point: its record, the
    first quiet point it is live at (`j0`) and the first it is not (`j1`), bytes, allocations."""

    owner: np.ndarray
    j0: np.ndarray
    j1: np.ndarray
    nbytes: np.ndarray
    count: np.ndarray

    @classmethod
    def read(cls, reader: Any, quiet: np.ndarray) -> tuple[list[Any], _Live]:
        """(every temporal record, the live intervals) of a capture."""
        # Flat lists first: per-record numpy calls cost more than the arithmetic (measured:
        # 2 s of 3 s for 5 iterations at N=4).
        records, owner, alloc, free, counts, sizes = [], [], [], [], [], []
        never = np.iinfo(np.int64).max
        for record in reader.get_temporal_allocation_records(merge_threads=True):
            index = len(records)
            records.append(record)
            for iv in record.intervals:
                owner.append(index)
                alloc.append(iv.allocated_before_snapshot)
                gone = iv.deallocated_before_snapshot
                free.append(never if gone is None else gone)
                counts.append(iv.n_allocations)
                sizes.append(iv.n_bytes)
        # Live at quiet point j when alloc <= quiet[j] < free.
        j0 = np.searchsorted(quiet, np.asarray(alloc, dtype=np.int64), side="left")
        j1 = np.searchsorted(quiet, np.asarray(free, dtype=np.int64), side="left")
        live = j1 > j0  # the rest was freed before the next quiet point: temporaries
        return records, cls(
            np.asarray(owner, dtype=np.int64)[live],
            j0[live],
            j1[live],
            np.asarray(sizes, dtype=float)[live],
            np.asarray(counts, dtype=float)[live],
        )

    @classmethod
    def empty(cls) -> _Live:
        """No quiet point to read at: nothing is worth a pass over the capture."""
        index, value = np.zeros(0, dtype=np.int64), np.zeros(0)
        return cls(index, index, index, value, value)

    def held_points(self, n_records: int) -> np.ndarray:
        """Per record, at how many quiet points it holds something."""
        return np.bincount(self.owner, weights=self.j1 - self.j0, minlength=n_records)

    def series(self, n: int, rows: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """(bytes, allocations) live per row at each of the n quiet points; `rows[i]` is the
        row of interval i (-1: none)."""
        mine = rows >= 0
        rows, j0, j1 = rows[mine], self.j0[mine], self.j1[mine]
        out = []
        for values in (self.nbytes[mine], self.count[mine]):
            diff = np.zeros((n_rows, n + 1))
            np.add.at(diff, (rows, j0), values)
            np.add.at(diff, (rows, j1), -values)
            out.append(np.cumsum(diff, axis=1)[:, :n])
        return out[0], out[1]


def _group(
    records: list[Any], kept: np.ndarray, depth: int
) -> tuple[np.ndarray, list[str], list[tuple[tuple[Frame, ...], Frame | None, str | None]]]:
    """(site of each kept record, site keys, site frames): records whose trimmed stacks agree
    on their first `depth` frames are one site."""
    by_key: dict[str, int] = {}
    frames_of: list[tuple[tuple[Frame, ...], Frame | None, str | None]] = []
    site_of = np.empty(kept.size, dtype=np.int64)
    make = FrameMaker()
    for r, index in enumerate(kept):
        frames, soak, phase = site_frames(records[index].hybrid_stack_trace(), make)
        key = " <- ".join(
            f"{f.function}@{f.file if f.python else f.library}" for f in frames[:depth]
        )
        if key not in by_key:
            by_key[key] = len(frames_of)
            frames_of.append((tuple(frames[:SHOWN_FRAMES]), soak, phase))
        site_of[r] = by_key[key]
    return site_of, list(by_key), frames_of


def read_sites(
    path: Path,
    windows: Mapping[int, tuple[float, float]],
    depth: int = 8,
    top: int = 50,
) -> SiteCapture:
    """Live bytes and counts per site at each quiet point (`windows`: iteration -> (begin,
    end) in epoch seconds); keeps the `top` sites that grew most, and the sum of all."""
    import memray

    reader = memray.FileReader(str(path), max_memory_records=2**31 - 1)
    times = np.fromiter((s.time for s in reader.get_memory_snapshots()), dtype=np.int64)
    iterations, quiet = _quiet_snapshots(times, windows)
    n = len(iterations)
    records, live = _Live.read(reader, quiet) if n else ([], _Live.empty())
    total_bytes, total_count = live.series(n, np.zeros(live.owner.size, dtype=np.int64), 1)
    kept = np.flatnonzero(live.held_points(len(records)) >= MIN_HELD_POINTS)
    row_of = np.full(len(records), -1, dtype=np.int64)
    row_of[kept] = np.arange(kept.size)
    per_record_bytes, per_record_count = live.series(n, row_of[live.owner], kept.size)
    site_of, keys, frames_of = _group(records, kept, depth)
    site_bytes = np.zeros((len(keys), n))
    site_count = np.zeros((len(keys), n))
    np.add.at(site_bytes, site_of, per_record_bytes)
    np.add.at(site_count, site_of, per_record_count)
    order = rank_by_growth(site_bytes)[:top]
    sites = [Site(k + 1, keys[i], *frames_of[i]) for k, i in enumerate(order)]
    # Warm-up quiet points come before the first record: not missed, just not traced.
    start_s = times[0] / 1000 if times.size else math.inf
    missed = sorted(it for it in set(windows) - set(iterations) if windows[it][0] >= start_s)
    if missed:
        first, last = (int(times[0]), int(times[-1])) if times.size else (0, 0)
        log.warning(
            "quiet points without a memray record: %s (records %d..%d ms; windows %s)",
            missed,
            first,
            last,
            {it: (round(windows[it][0] * 1000), round(windows[it][1] * 1000)) for it in missed},
        )
    return SiteCapture(
        iterations=iterations,
        sites=sites,
        live_bytes=site_bytes[order],
        live_count=site_count[order],
        total_bytes=total_bytes[0],
        total_count=total_count[0],
        capture_bytes=Path(path).stat().st_size,
    )
