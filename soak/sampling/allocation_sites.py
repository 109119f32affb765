"""What a capture of allocation sites holds, whichever tracer made it (memray in the worker,
heaptrack in a tritonserver process): sites keyed on their trimmed stacks, and the bytes and
allocations live at each quiet point, ranked by growth."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

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


def rank_by_growth(live_bytes: np.ndarray) -> np.ndarray:
    """Sites ordered by growth (median of the last few quiet points minus the first few),
    then by bytes live at the end: the ones a leak hunt wants first."""
    if live_bytes.size == 0:
        return np.arange(live_bytes.shape[0])
    k = max(1, min(5, live_bytes.shape[1] // 4))
    growth = np.median(live_bytes[:, -k:], axis=1) - np.median(live_bytes[:, :k], axis=1)
    return np.lexsort((-live_bytes[:, -1], -growth))
