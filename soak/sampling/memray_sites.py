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

import functools
import linecache
import logging
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CAPTURE_FILE = "memray.bin"
#: Every memory record is a snapshot the reader's temporal pass keys allocations on: 20 ms
#: rather than 10 cut that pass by a sixth (250 cpu iterations), and a quiet point held open
#: `MIN_QUIET_S` still holds two records.
MEMORY_INTERVAL_MS = 20
#: A quiet point is held open this long at least, so that memray's records fall inside it.
MIN_QUIET_S = 0.05
#: The id under which the sum over every tracked allocation is stored (not a site).
ALL_SITES = 0
#: Frames kept with a site for display (the key uses the profile's stack_depth).
SHOWN_FRAMES = 24

#: Leading frames that say "an allocation happened", not where: allocator entry points,
#: Python's own allocators, memray's hooks. Trimmed before a stack is keyed.
ALLOCATOR_NAMES = {
    "malloc",
    "calloc",
    "realloc",
    "free",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "mmap",
    "mmap64",
    "reallocarray",
    "strdup",
    "strndup",
    "<unknown>",
}
ALLOCATOR_PREFIXES = (
    "operator new",
    "memray::",
    "intercept::",
    "__libc_",
    "_PyObject_Malloc",
    "_PyObject_Calloc",
    "_PyObject_Realloc",
    "PyObject_Malloc",
    "PyObject_Calloc",
    "PyObject_Realloc",
    "_PyMem_",
    "PyMem_",
    "pymalloc_",
    "_PyObject_GC_",
    "gc_alloc",
    "PyType_GenericAlloc",
    "_PyType_AllocNoTrack",
    "__gnu_cxx::new_allocator",
    "std::__new_allocator",
    "std::allocator_traits",
    "std::_Vector_base",
    "raw_malloc",
    "raw_calloc",
    "raw_realloc",
    "tracemalloc_",
    "_Py_hashtable_",
    "hashtable_",
)


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


@dataclass(frozen=True)
class Frame:
    """One frame of a site's stack: native (C/C++) or Python (a .py file)."""

    function: str
    file: str
    line: int
    library: str

    @property
    def python(self) -> bool:
        return self.file.endswith(".py")

    def text(self) -> str:
        where = self.file if self.file != "<unknown>" else self.library
        line = f":{self.line}" if self.line else ""
        return f"{self.function} ({where}{line})"


@dataclass(frozen=True)
class Site:
    """An allocation site: the trimmed stack it is keyed on, innermost frame first.

    `phase` is the lifecycle phase that was running when a Python caller reached it (None on
    Triton's own threads, where no Python frame exists).
    """

    site_id: int
    key: str
    frames: tuple[Frame, ...]
    soak_frame: Frame | None = None
    phase: str | None = None

    @property
    def python_frame(self) -> Frame | None:
        """The innermost Python frame: which Python call reached this allocation."""
        return next((f for f in self.frames if f.python), self.soak_frame)

    @property
    def api_call(self) -> str | None:
        """The outermost TRITONSERVER_* function on the stack: the C API call that made (or
        reached) the allocation, the name a leak report against Triton starts from."""
        names = [f.function for f in self.frames if f.function.startswith("TRITONSERVER_")]
        return names[-1] if names else None

    @property
    def thread(self) -> str:
        """'python' when reached from Python code (the workload), else 'native' (Triton's
        own threads, or a native frame deeper than the captured stack)."""
        return "python" if self.python_frame else "native"

    def stack_text(self) -> str:
        return "\n".join(f.text() for f in self.frames)

    def summary(self) -> str:
        """One line: the innermost frame, the soak call that reached it and in which phase."""
        top = self.frames[0].text() if self.frames else "(empty stack)"
        py = self.soak_frame or self.python_frame
        text = top
        if self.api_call and not self.frames[0].function.startswith(self.api_call):
            text += f" <- {self.api_call}"
        if py and py != self.frames[0]:
            text += f" <- {py.text()}"
        return f"{text} in phase {self.phase}" if self.phase else text


@dataclass
class SiteCapture:
    """Live bytes and allocation counts per site (rows) at each quiet point (columns).

    `total_bytes` / `total_count` are summed over every tracked allocation, kept sites or not.
    """

    iterations: list[int]
    sites: list[Site]
    live_bytes: np.ndarray
    live_count: np.ndarray
    total_bytes: np.ndarray
    total_count: np.ndarray
    capture_bytes: int = 0
    stats: dict[str, float] = field(default_factory=dict)

    def rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(sites rows, site_samples rows) for the store; site 0 is the sum of all."""
        site_rows = [
            {
                "site_id": s.site_id,
                "stack_key": s.key,
                "stack_text": s.stack_text(),
                "frames": [f.__dict__ for f in s.frames],
                "summary": s.summary(),
                "python_frame": s.python_frame.text() if s.python_frame else None,
                "soak_call": s.soak_frame.text() if s.soak_frame else None,
                "phase": s.phase,
                "thread": s.thread,
            }
            for s in self.sites
        ]
        samples = []
        for j, it in enumerate(self.iterations):
            samples.append(
                {
                    "iteration": it,
                    "site_id": ALL_SITES,
                    "live_bytes": int(self.total_bytes[j]),
                    "live_count": int(self.total_count[j]),
                }
            )
            for k, s in enumerate(self.sites):
                samples.append(
                    {
                        "iteration": it,
                        "site_id": s.site_id,
                        "live_bytes": int(self.live_bytes[k, j]),
                        "live_count": int(self.live_count[k, j]),
                    }
                )
        return site_rows, samples


def _library(function: str, file: str) -> str:
    """memray names a native frame's function and source file, not its library: say where it
    lives from what the name tells (good enough to tell Triton from Python from libffi)."""
    if file.endswith(".py"):
        return "python"
    if file.startswith(("Objects/", "Python/", "Modules/", "Include/", "./Include/", "Parser/")):
        return "libpython"
    if "Python-3" in file or "_ctypes" in file:
        return "libpython"
    if function.startswith("ffi_"):
        return "libffi"
    if "TRITON" in function or "triton::" in function:
        return "libtritonserver"
    if function.startswith(("std::", "__cxx")):
        return "libstdc++"
    return "?"


def _short(file: str) -> str:
    """soak's files relative to the package's parent (soak/workload/inject.py); others as is."""
    at = file.rfind("/soak/")
    return file[at + 1 :] if at >= 0 and file.endswith(".py") else file


_PHASE_LINE = re.compile(r'_phase\("([a-z_]+)"\)')


def _phase_of(stack: list[Frame]) -> str | None:
    """The lifecycle phase the allocation was made in: the `with self._phase("...")` block of
    `Lifecycle.run` that encloses the line it was running (read from the source)."""
    frame = next(
        (f for f in stack if f.function == "run" and f.file.endswith("workload/lifecycle.py")),
        None,
    )
    return None if frame is None else _phase_at(frame.file, frame.line)


@functools.lru_cache(maxsize=1024)
def _phase_at(file: str, line: int) -> str | None:
    for at in range(line, max(0, line - 40), -1):
        found = _PHASE_LINE.search(linecache.getline(file, at))
        if found:
            return found.group(1)
    return None


class _FrameMaker:
    """Frame objects per raw (function, file, line), made once per read: thousands of stacks
    share most of their frames (measured: 736,000 frames of 22,000 stacks in one capture)."""

    def __init__(self) -> None:
        self._full: dict[tuple[str, str, int], Frame] = {}
        self._short: dict[Frame, Frame] = {}

    def full(self, raw: tuple[str, str, int]) -> Frame:
        frame = self._full.get(raw)
        if frame is None:
            fn, file, line = raw
            fn, file = fn or "<unknown>", file or "<unknown>"
            frame = self._full[raw] = Frame(fn, file, int(line or 0), _library(fn, file))
        return frame

    def short(self, frame: Frame) -> Frame:
        """The frame as shown: soak's files relative to the package's parent."""
        made = self._short.get(frame)
        if made is None:
            made = self._short[frame] = Frame(
                frame.function, _short(frame.file), frame.line, frame.library
            )
        return made


def _trimmed(stack: list[tuple[str, str, int]], make: _FrameMaker) -> list[Frame]:
    frames = [make.full(raw) for raw in stack]
    start = 0
    while start < len(frames) - 1 and (
        frames[start].function in ALLOCATOR_NAMES
        or frames[start].function.startswith(ALLOCATOR_PREFIXES)
    ):
        start += 1
    return frames[start:]


def _site_frames(
    stack: list[tuple[str, str, int]], make: _FrameMaker | None = None
) -> tuple[list[Frame], Frame | None, str | None]:
    """(trimmed frames, innermost soak frame, phase) of one hybrid stack."""
    make = make or _FrameMaker()
    frames = _trimmed(stack, make)
    phase = _phase_of(frames)
    soak = next((f for f in frames if f.python and "/soak/" in f.file), None)
    return [make.short(f) for f in frames], (make.short(soak) if soak else None), phase


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
    make = _FrameMaker()
    for r, index in enumerate(kept):
        frames, soak, phase = _site_frames(records[index].hybrid_stack_trace(), make)
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


def rank_by_growth(live_bytes: np.ndarray) -> np.ndarray:
    """Sites ordered by growth (median of the last few quiet points minus the first few),
    then by bytes live at the end: the ones a leak hunt wants first."""
    if live_bytes.size == 0:
        return np.arange(live_bytes.shape[0])
    k = max(1, min(5, live_bytes.shape[1] // 4))
    growth = np.median(live_bytes[:, -k:], axis=1) - np.median(live_bytes[:, :k], axis=1)
    return np.lexsort((-live_bytes[:, -1], -growth))
