"""Real leaks of known size, switched on by a profile's [inject] section.

They exist to prove that soak detects what it claims to detect; each one is a genuine
resource that is never given back, held in module-level lists for the process's life.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass

from soak import libc
from soak.target.interface import MemoryType

_native: list[int] = []
_python: list[bytearray] = []
_fds: list[int] = []
_threads: list[threading.Thread] = []
_never = threading.Event()
_lock = threading.Lock()


@dataclass(frozen=True)
class Injection:
    """Which leaks to inject; all off by default."""

    native_bytes_per_server: int = 0
    unreleased_response_fraction: float = 0.0
    python_bytes_per_iteration: int = 0
    fds_per_iteration: int = 0
    threads_per_iteration: int = 0
    skip_server_delete: bool = False
    gpu_bytes_per_server: int = 0
    client_bytes_per_request: int = 0


def leak_native(size: int) -> None:
    """operator new (malloc underneath), every page touched: resident (RSS), not just reserved."""
    if size <= 0:
        return
    # operator new, not libc.malloc: memray sees it (soak.libc.operator_new says why)
    ptr = libc.operator_new()(size)
    if not ptr:
        raise MemoryError(f"operator new({size}) failed")
    ctypes.memset(ptr, 0xA5, size)
    with _lock:
        _native.append(ptr)


def leak_gpu(size: int, device: int = 0) -> None:
    """cudaMalloc through libcudart next to libtritonserver (an in-process server's leak)."""
    if size > 0:
        from soak.triton import memory as triton_memory

        ptr = triton_memory.allocate(MemoryType.GPU, size, device)
        with _lock:
            _native.append(ptr)


def leak_python(size: int) -> None:
    if size > 0:
        with _lock:
            _python.append(bytearray(b"\x5a" * size))


def leak_fds(count: int) -> None:
    for _ in range(count):
        fd = os.open(os.devnull, os.O_RDONLY)
        with _lock:
            _fds.append(fd)


def leak_threads(count: int) -> None:
    for _ in range(count):
        thread = threading.Thread(target=_never.wait, name="soak-injected-leak", daemon=True)
        thread.start()
        with _lock:
            _threads.append(thread)


def per_iteration(injection: Injection) -> None:
    leak_python(injection.python_bytes_per_iteration)
    leak_fds(injection.fds_per_iteration)
    leak_threads(injection.threads_per_iteration)


def per_request(injection: Injection, requests: int) -> None:
    """What the client keeps for each of `requests` completed requests (one allocation each,
    as a client library that forgets a per-request buffer would)."""
    for _ in range(requests if injection.client_bytes_per_request > 0 else 0):
        leak_native(injection.client_bytes_per_request)


class ResponseLeaker:
    """Decides which responses to keep so that `fraction` of them stay undeleted."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self._credit = 0.0
        self._lock = threading.Lock()

    def keep_next(self) -> bool:
        if self.fraction <= 0:
            return False
        with self._lock:
            self._credit += self.fraction
            if self._credit >= 1.0:
                self._credit -= 1.0
                return True
            return False
