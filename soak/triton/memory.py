"""Buffers in system, pinned or GPU memory, for request inputs and response outputs.

System memory comes from libc malloc (Triton frees nothing of ours; our release callback
does); pinned and GPU memory from the libcudart that ships next to libtritonserver.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import threading
from ctypes import c_int, c_size_t, c_void_p
from enum import Enum
from pathlib import Path

from soak import libc
from soak.errors import EnvironmentProblem
from soak.triton.capi import MEMORY_CPU, MEMORY_CPU_PINNED, MEMORY_GPU

log = logging.getLogger(__name__)

_MEMCPY_H2D, _MEMCPY_D2H = 1, 2


class MemoryType(str, Enum):
    SYSTEM = "system"
    PINNED = "pinned"
    GPU = "gpu"

    @property
    def triton(self) -> int:
        return {"system": MEMORY_CPU, "pinned": MEMORY_CPU_PINNED, "gpu": MEMORY_GPU}[self.value]

    @classmethod
    def from_triton(cls, code: int) -> MemoryType:
        return {MEMORY_CPU: cls.SYSTEM, MEMORY_CPU_PINNED: cls.PINNED, MEMORY_GPU: cls.GPU}[code]


class Cuda:
    """The few libcudart calls soak needs; `available` says whether a device answers."""

    def __init__(self, library_dir: Path | None) -> None:
        self.lib: ctypes.CDLL | None = None
        self.device_count = 0
        self.problem: str | None = None
        candidates = []
        if library_dir is not None:
            candidates += sorted(glob.glob(str(library_dir / "libcudart*.so*")))
        candidates += ["libcudart.so", "libcudart.so.12"]
        for name in candidates:
            try:
                self.lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if self.lib is None:
            self.problem = "libcudart was not found next to libtritonserver"
            return
        lib = self.lib
        lib.cudaGetDeviceCount.argtypes = [ctypes.POINTER(c_int)]
        lib.cudaMalloc.argtypes = [ctypes.POINTER(c_void_p), c_size_t]
        lib.cudaHostAlloc.argtypes = [ctypes.POINTER(c_void_p), c_size_t, ctypes.c_uint]
        lib.cudaFree.argtypes = [c_void_p]
        lib.cudaFreeHost.argtypes = [c_void_p]
        lib.cudaMemcpy.argtypes = [c_void_p, c_void_p, c_size_t, c_int]
        lib.cudaSetDevice.argtypes = [c_int]
        lib.cudaGetErrorString.argtypes = [c_int]
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        count = c_int(0)
        rc = lib.cudaGetDeviceCount(ctypes.byref(count))
        if rc != 0:
            self.problem = f"CUDA reports no usable device ({self._error(rc)})"
        elif count.value == 0:
            self.problem = "CUDA reports 0 devices"
        self.device_count = count.value if rc == 0 else 0

    @property
    def available(self) -> bool:
        return self.problem is None

    def _error(self, rc: int) -> str:
        assert self.lib is not None
        text = self.lib.cudaGetErrorString(rc)
        return f"cuda error {rc}: {text.decode() if text else '?'}"

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise MemoryError(f"{what} failed: {self._error(rc)}")

    def malloc(self, size: int) -> int:
        ptr = c_void_p()
        assert self.lib is not None
        self._check(self.lib.cudaMalloc(ctypes.byref(ptr), size), f"cudaMalloc({size})")
        return ptr.value or 0

    def host_alloc(self, size: int) -> int:
        ptr = c_void_p()
        assert self.lib is not None
        self._check(self.lib.cudaHostAlloc(ctypes.byref(ptr), size, 0), f"cudaHostAlloc({size})")
        return ptr.value or 0

    def free(self, ptr: int) -> None:
        assert self.lib is not None
        self._check(self.lib.cudaFree(c_void_p(ptr)), "cudaFree")

    def free_host(self, ptr: int) -> None:
        assert self.lib is not None
        self._check(self.lib.cudaFreeHost(c_void_p(ptr)), "cudaFreeHost")

    def to_device(self, dst: int, src: int, size: int) -> None:
        assert self.lib is not None
        self._check(self.lib.cudaMemcpy(c_void_p(dst), c_void_p(src), size, _MEMCPY_H2D), "memcpy")

    def to_host(self, dst: int, src: int, size: int) -> None:
        assert self.lib is not None
        self._check(self.lib.cudaMemcpy(c_void_p(dst), c_void_p(src), size, _MEMCPY_D2H), "memcpy")


_cuda: Cuda | None = None
_cuda_lock = threading.Lock()


def cuda(library_dir: Path | None = None) -> Cuda:
    global _cuda
    with _cuda_lock:
        if _cuda is None:
            _cuda = Cuda(library_dir)
        return _cuda


def require(memory_type: MemoryType, library_dir: Path | None = None) -> None:
    """Refuse pinned or GPU memory up front where CUDA cannot provide it."""
    if memory_type is MemoryType.SYSTEM:
        return
    c = cuda(library_dir)
    if not c.available:
        raise EnvironmentProblem(
            f"memory_type '{memory_type.value}' needs a CUDA GPU, but {c.problem}; "
            "use memory_type = 'system' on this machine"
        )


def allocate(memory_type: MemoryType, size: int) -> int:
    """A raw buffer of `size` bytes (at least 1) in the given memory; free it with `release`."""
    size = max(size, 1)
    if memory_type is MemoryType.SYSTEM:
        ptr = libc.malloc(size)
        if not ptr:
            raise MemoryError(f"malloc({size}) failed")
        return ptr
    c = cuda()
    if memory_type is MemoryType.PINNED:
        return c.host_alloc(size)
    return c.malloc(size)


def release(memory_type: MemoryType, ptr: int) -> None:
    if not ptr:
        return
    if memory_type is MemoryType.SYSTEM:
        libc.free(c_void_p(ptr))
    elif memory_type is MemoryType.PINNED:
        cuda().free_host(ptr)
    else:
        cuda().free(ptr)


def copy_in(memory_type: MemoryType, dst: int, src: int, size: int) -> None:
    if memory_type is MemoryType.GPU:
        cuda().to_device(dst, src, size)
    else:
        ctypes.memmove(dst, src, size)


def copy_out(memory_type: MemoryType, dst: int, src: int, size: int) -> None:
    if memory_type is MemoryType.GPU:
        cuda().to_host(dst, src, size)
    else:
        ctypes.memmove(dst, src, size)
