"""The C library's allocator, bound once for the process (ctypes and the stdlib only).

`malloc` and `free` serve the buffers soak hands to Triton; `operator_new` (libstdc++) the
injected native leak; `mallinfo2` and `malloc_trim` the heap sampling, and are None where the
C library lacks them (not glibc, or glibc older than 2.33 for `mallinfo2`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2``: ten size_t fields, in this order."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_libc = ctypes.CDLL(None)  # the C library this process already runs on
# malloc and free keep the GIL (a PyDLL call does not release it): the output allocator runs
# them on the model instance's thread, where giving the GIL up for a microsecond's call meant
# waiting to take it back from soak's own thread while the instance stood still.
_libc_gil = ctypes.PyDLL(None)

malloc = _libc_gil.malloc
malloc.argtypes = [ctypes.c_size_t]
malloc.restype = ctypes.c_void_p

free = _libc_gil.free
free.argtypes = [ctypes.c_void_p]
free.restype = None

mallinfo2: Any = getattr(_libc, "mallinfo2", None)
if mallinfo2 is not None:
    mallinfo2.argtypes = []
    mallinfo2.restype = MallInfo2

malloc_trim: Any = getattr(_libc, "malloc_trim", None)
if malloc_trim is not None:
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int


@functools.cache
def operator_new() -> Any:
    """libstdc++'s ``operator new(size_t)`` (bound on first use; the supervisor never needs it).

    It reaches malloc through libstdc++'s own import table, which memray hooks, so what it
    allocates is seen by memray and, like Triton's own C++ allocations, not by tracemalloc;
    `malloc` above is called through a bare ctypes function pointer that memray never sees.
    Call the returned function directly, so that memray names the caller's Python frame.
    """
    fn = ctypes.CDLL(ctypes.util.find_library("stdc++") or "libstdc++.so.6")._Znwm
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_void_p
    return fn
