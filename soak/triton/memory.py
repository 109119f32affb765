"""Buffers in system, pinned or GPU memory, for request inputs and response outputs.

System memory comes from libc malloc (Triton frees nothing of ours; our release callback
does); pinned and GPU memory from the libcudart that ships next to libtritonserver (the
wheel's copy has a hashed soname, so a bare ``libcudart.so`` lookup misses it). A failed CUDA
call raises `CudaError`, never a bare assert or a MemoryError: it is the machine's problem.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import threading
from ctypes import c_int, c_size_t, c_void_p
from pathlib import Path

from soak import libc
from soak.errors import EnvironmentProblem, SoakError
from soak.target.interface import MemoryType
from soak.triton import capi
from soak.triton.capi import MEMORY_CPU, MEMORY_CPU_PINNED, MEMORY_GPU

log = logging.getLogger(__name__)

_MEMCPY_H2D, _MEMCPY_D2H = 1, 2


_CODES = {
    MemoryType.SYSTEM: MEMORY_CPU,
    MemoryType.PINNED: MEMORY_CPU_PINNED,
    MemoryType.GPU: MEMORY_GPU,
}
_TYPES = {code: memory_type for memory_type, code in _CODES.items()}


def triton_code(memory_type: MemoryType) -> int:
    """The TRITONSERVER_MemoryType of a memory type."""
    return _CODES[memory_type]


def from_triton(code: int) -> MemoryType:
    return _TYPES[code]


class CudaError(SoakError):
    """A CUDA runtime call failed (or libcudart is missing); names the call and CUDA's words."""

    def __init__(self, call: str, detail: str, code: int | None = None) -> None:
        super().__init__(f"{call} failed: {detail}")
        self.call = call
        self.code = code


class Cuda:
    """The few libcudart calls soak needs; `available` says whether a device answers."""

    #: A system CUDA runtime on the loader path, tried only when none is next to the core
    #: (NVIDIA's containers keep it outside /opt/tritonserver/lib).
    FALLBACK_NAMES: tuple[str, ...] = ("libcudart.so", "libcudart.so.12")

    def __init__(self, library_dir: Path | None) -> None:
        self.lib: ctypes.CDLL | None = None
        self.library: str | None = None  # what was loaded: a path, or a bare soname
        self.device_count = 0
        self.problem: str | None = None
        candidates = []
        if library_dir is not None:
            candidates += sorted(glob.glob(str(library_dir / "libcudart*.so*")))
        candidates += self.FALLBACK_NAMES
        for name in candidates:
            try:
                self.lib = ctypes.CDLL(name)
                self.library = name
                break
            except OSError:
                continue
        if self.lib is None:
            where = f"in {library_dir}" if library_dir is not None else "(no folder given)"
            self.problem = f"libcudart was not found next to libtritonserver {where}"
            return
        lib = self.lib
        lib.cudaGetDeviceCount.argtypes = [ctypes.POINTER(c_int)]
        lib.cudaGetDevice.argtypes = [ctypes.POINTER(c_int)]
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
        text = self._lib("cudaGetErrorString").cudaGetErrorString(rc)
        return f"cuda error {rc}: {text.decode() if text else '?'}"

    def _lib(self, call: str) -> ctypes.CDLL:
        if self.lib is None:
            raise CudaError(call, self.problem or "libcudart is not loaded")
        return self.lib

    def _check(self, rc: int, call: str, step: str | None = None) -> None:
        """Raise CudaError for a non-zero return; `step`: the inner call of a compound one."""
        if rc != 0:
            detail = self._error(rc)
            raise CudaError(call, f"{step}: {detail}" if step else detail, rc)

    def malloc(self, size: int, device: int = 0) -> int:
        """`size` bytes on GPU `device`, made current on this thread only for the call.

        The caller is often one of Triton's threads (the response allocator), whose current
        device belongs to Triton: it is put back afterwards.
        """
        call = f"cudaMalloc({size}) on device {device}"
        lib = self._lib(call)
        current = c_int(0)
        self._check(lib.cudaGetDevice(ctypes.byref(current)), call, "cudaGetDevice")
        if current.value != device:
            self._check(lib.cudaSetDevice(device), call, f"cudaSetDevice({device})")
        ptr = c_void_p()
        try:
            self._check(lib.cudaMalloc(ctypes.byref(ptr), size), call)
        finally:
            if current.value != device:
                lib.cudaSetDevice(current.value)  # best effort: the allocation's error wins
        return ptr.value or 0

    def host_alloc(self, size: int) -> int:
        ptr = c_void_p()
        call = f"cudaHostAlloc({size})"
        self._check(self._lib(call).cudaHostAlloc(ctypes.byref(ptr), size, 0), call)
        return ptr.value or 0

    def free(self, ptr: int) -> None:
        self._check(self._lib("cudaFree").cudaFree(c_void_p(ptr)), "cudaFree")

    def free_host(self, ptr: int) -> None:
        self._check(self._lib("cudaFreeHost").cudaFreeHost(c_void_p(ptr)), "cudaFreeHost")

    def to_device(self, dst: int, src: int, size: int) -> None:
        call = f"cudaMemcpy({size}, host to device)"
        lib = self._lib(call)
        self._check(lib.cudaMemcpy(c_void_p(dst), c_void_p(src), size, _MEMCPY_H2D), call)

    def to_host(self, dst: int, src: int, size: int) -> None:
        call = f"cudaMemcpy({size}, device to host)"
        lib = self._lib(call)
        self._check(lib.cudaMemcpy(c_void_p(dst), c_void_p(src), size, _MEMCPY_D2H), call)


_cuda: Cuda | None = None
_cuda_lock = threading.Lock()


def core_library_dir() -> Path | None:
    """The folder of the Triton core this process loaded (else would load): libcudart's home."""
    try:
        return capi.loaded().install.library_dir
    except EnvironmentProblem:
        pass
    try:
        return capi.locate().library_dir
    except EnvironmentProblem:
        return None


def cuda(library_dir: Path | None = None) -> Cuda:
    """The process-wide handle; made on first use from `library_dir`, else the core's folder."""
    global _cuda
    with _cuda_lock:
        if _cuda is None:
            _cuda = Cuda(library_dir if library_dir is not None else core_library_dir())
        return _cuda


def require(memory_type: MemoryType, library_dir: Path | None = None, device: int = 0) -> None:
    """Refuse pinned or GPU memory up front where CUDA cannot provide it (or lacks `device`)."""
    if memory_type is MemoryType.SYSTEM:
        return
    c = cuda(library_dir)
    if not c.available:
        raise EnvironmentProblem(
            f"memory_type '{memory_type.value}' needs a CUDA GPU, but {c.problem}; "
            "use memory_type = 'system' on this machine"
        )
    if not 0 <= device < c.device_count:
        raise EnvironmentProblem(
            f"gpu_device = {device}, but CUDA sees {c.device_count} device(s) "
            f"(allowed 0 .. {c.device_count - 1}; CUDA_VISIBLE_DEVICES narrows them)"
        )


def allocate(memory_type: MemoryType, size: int, device: int = 0) -> int:
    """A raw buffer of `size` bytes (at least 1) in the given memory; free it with `release`.

    `device` is the GPU of a GPU buffer (pinned host memory belongs to no device).
    """
    size = max(size, 1)
    if memory_type is MemoryType.SYSTEM:
        ptr = libc.malloc(size)
        if not ptr:
            raise MemoryError(f"malloc({size}) failed")
        return ptr
    c = cuda()
    if memory_type is MemoryType.PINNED:
        return c.host_alloc(size)
    return c.malloc(size, device)


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
