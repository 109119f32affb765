"""The C library's allocator, bound once for the process (ctypes and the stdlib only).

`malloc` and `free` serve the buffers soak hands to Triton and the injected native leak;
`mallinfo2` and `malloc_trim` the heap sampling, and are None where the C library lacks them
(not glibc, or glibc older than 2.33 for `mallinfo2`).
"""

from __future__ import annotations

import ctypes
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

malloc = _libc.malloc
malloc.argtypes = [ctypes.c_size_t]
malloc.restype = ctypes.c_void_p

free = _libc.free
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
