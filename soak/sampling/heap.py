"""Sample the Python and C heaps from inside the worker: tracemalloc, gc object counts, objgraph's
type growth and glibc's mallinfo2. Stdlib, objgraph and soak.libc only: it must not import Triton or
psutil, and it frees nothing except what malloc_trim hands back to the system.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any

import objgraph

from soak import libc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeapSample:
    """Heap metrics of the worker at one quiet point.

    ``mallinfo_*`` are None where the C library is not glibc >= 2.33 (no ``mallinfo2``);
    ``growth`` holds (type name, live count, increase over the previous peak) for the types that
    grew most since the last growth check, and is empty on iterations without one.
    """

    iteration: int
    tracemalloc_current_bytes: int
    tracemalloc_peak_bytes: int
    gc_objects: int
    mallinfo_inuse_bytes: int | None
    mallinfo_free_bytes: int | None
    malloc_trimmed: bool
    growth: list[tuple[str, int, int]] = field(default_factory=list)
    sample_cost_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON lines; ``growth`` becomes a list of [type, count, increase]."""
        row = dataclasses.asdict(self)
        row["growth"] = [list(entry) for entry in self.growth]
        return row


def mallinfo_bytes() -> tuple[int | None, int | None]:
    """(in use, free) bytes of the C heap from ``mallinfo2()``, or (None, None) without it.

    In use is ``uordblks + hblkhd``: allocated chunks in the arenas plus mmapped chunks (large
    allocations bypass the arenas). Free is ``fordblks``: held by malloc but not in use.
    """
    if libc.mallinfo2 is None:
        return None, None
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd, info.fordblks


def malloc_trim() -> bool:
    """Return free C-heap memory to the system; False where glibc's malloc_trim is missing."""
    if libc.malloc_trim is None:
        return False
    libc.malloc_trim(0)
    return True


class HeapSampler:
    """Heap metrics at each quiet point of the worker.

    ``objgraph_every`` = 0 turns the growth check off. ``malloc_trim`` returns free C-heap pages
    before measuring, so that RSS and mallinfo show what is held, not what glibc caches.
    ``collect`` runs ``gc.collect()`` before every measurement: growth checks collect anyway,
    and without it the iterations with one would not be comparable to those without.

    tracemalloc hooks every Python allocation and slows the worker's Python code: a loop
    building dicts ran 7.7x slower with 1 frame per trace (14x with 25) on the 2-core dev
    machine. Triton's own C++ allocations are neither traced nor slowed. objgraph's growth walks
    every gc-tracked object, hence only every ``objgraph_every`` iterations.
    """

    def __init__(
        self,
        objgraph_every: int,
        malloc_trim: bool,
        top_types: int = 10,
        *,
        collect: bool = True,
        tracemalloc_frames: int = 1,
    ) -> None:
        if objgraph_every < 0:
            raise ValueError(f"objgraph_every must be >= 0, got {objgraph_every}")
        self.objgraph_every = objgraph_every
        self.malloc_trim = malloc_trim
        self.top_types = top_types
        self.collect = collect
        self.tracemalloc_frames = tracemalloc_frames
        self._started_tracemalloc = False
        self._growth_baseline_taken = False
        # Our own peak table, so that nothing else calling objgraph.growth() shifts our deltas.
        self._peak_stats: dict[str, int] = {}

    def start(self) -> None:
        """Start tracemalloc (unless already tracing) and take objgraph's baseline.

        Called by the first sample if not before; call it before the first iteration so that
        the first sample already covers one.
        """
        if not tracemalloc.is_tracing():
            tracemalloc.start(self.tracemalloc_frames)
            self._started_tracemalloc = True
        if self.objgraph_every and not self._growth_baseline_taken:
            objgraph.growth(limit=None, peak_stats=self._peak_stats)
            self._growth_baseline_taken = True

    def stop(self) -> None:
        """Stop tracemalloc if this sampler started it."""
        if self._started_tracemalloc and tracemalloc.is_tracing():
            tracemalloc.stop()
        self._started_tracemalloc = False

    def sample(self, iteration: int) -> HeapSample:
        """Measure now; the tracemalloc peak covers the time since the previous sample."""
        started = time.perf_counter()
        self.start()
        if self.collect:
            gc.collect()
        trimmed = malloc_trim() if self.malloc_trim else False
        current, peak = tracemalloc.get_traced_memory()
        inuse, free = mallinfo_bytes()
        gc_objects = len(gc.get_objects())
        growth: list[tuple[str, int, int]] = []
        if self.objgraph_every and iteration % self.objgraph_every == 0:
            growth = [
                (str(name), int(count), int(increase))
                for name, count, increase in objgraph.growth(
                    limit=self.top_types, peak_stats=self._peak_stats
                )
            ]
        tracemalloc.reset_peak()
        return HeapSample(
            iteration=iteration,
            tracemalloc_current_bytes=current,
            tracemalloc_peak_bytes=peak,
            gc_objects=gc_objects,
            mallinfo_inuse_bytes=inuse,
            mallinfo_free_bytes=free,
            malloc_trimmed=trimmed,
            growth=growth,
            sample_cost_s=time.perf_counter() - started,
        )
