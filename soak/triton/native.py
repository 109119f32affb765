"""soak's Triton callbacks in C (native_callbacks.c) for requests in system memory.

A Python callback on one of Triton's threads creates a Python thread state and takes the
GIL each time: six per request, about 25 us each, more than Triton's own work on a small
model (traffic N=1 on 2 cores: 2,500 -> see the README's performance section). The C
callbacks only allocate, free and hand over; soak's thread waits on the request's slot
without the GIL, then reads and deletes the responses as before (`callbacks.drain`).

The C file is compiled once per source text with the machine's C compiler (`CC`, else
`cc`) into soak's cache folder and loaded from there. Without a compiler, or where the
build fails, there is no library: the Python callbacks serve every request and `why_not()`
says why, in one line. `SOAK_NATIVE_CALLBACKS=0` asks for the Python callbacks.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from ctypes import c_double, c_int, c_size_t, c_uint32, c_void_p
from pathlib import Path

from soak.triton import capi
from soak.triton.callbacks import Inference, abandoned, drain
from soak.triton.returns import TritonError, check, triton_lib

SOURCE = Path(__file__).with_name("native_callbacks.c")
ENV_SWITCH = "SOAK_NATIVE_CALLBACKS"
ENV_CACHE = "SOAK_CACHE_DIR"
INTERFACE_VERSION = 1
COMPILE_TIMEOUT_S = 120
_TAKE_BATCH = 16


def cache_dir() -> Path:
    """Where built libraries are kept: $SOAK_CACHE_DIR, else $XDG_CACHE_HOME/soak, else
    ~/.cache/soak."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "soak"


def _compiler() -> str | None:
    cc = os.environ.get("CC") or "cc"
    return shutil.which(cc) or (shutil.which("gcc") if "CC" not in os.environ else None)


def _flags() -> list[str]:
    return ["-O2", "-shared", "-fPIC", "-pthread"]


def build(dest_dir: Path | None = None) -> Path:
    """The compiled library for the current source (built unless already cached); raises
    OSError or subprocess errors when it cannot be built."""
    cc = _compiler()
    if cc is None:
        raise FileNotFoundError(f"no C compiler {os.environ.get('CC') or 'cc'} on PATH")
    source = SOURCE.read_bytes()
    # A cache folder may be shared between machines (a network home): the machine is in the key.
    key = " ".join([cc, *_flags(), platform.machine(), platform.system()]).encode()
    digest = hashlib.sha256(source + key).hexdigest()[:16]
    folder = Path(dest_dir) if dest_dir is not None else cache_dir()
    lib = folder / f"native-callbacks-{digest}.so"
    if lib.is_file():
        return lib
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=lib.name + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        subprocess.run(
            [cc, *_flags(), str(SOURCE), "-o", tmp],
            check=True,
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_S,
        )
        os.replace(tmp, lib)  # atomic: processes building at once each install a whole file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


class NativeCompletions:
    """The C callbacks and their allocator (system memory), made once per process: the
    `Completions` of every request in system memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        lib = self.lib = ctypes.CDLL(str(path))  # CDLL: each call gives the GIL up
        lib.soak_native_version.restype = c_int
        if lib.soak_native_version() != INTERFACE_VERSION:
            raise OSError(f"{path}: not interface version {INTERFACE_VERSION}")
        lib.soak_native_init.argtypes = [c_void_p, c_void_p, c_void_p, c_int]
        lib.soak_native_init.restype = None
        lib.soak_slot_new.restype = c_void_p
        lib.soak_slot_free.argtypes = [c_void_p]
        lib.soak_slot_free.restype = None
        lib.soak_slot_wait.argtypes = [c_void_p, c_double]
        lib.soak_slot_wait.restype = c_int
        lib.soak_slot_take.argtypes = [c_void_p, ctypes.POINTER(c_void_p), c_size_t]
        lib.soak_slot_take.restype = c_size_t
        lib.soak_slot_state.argtypes = [c_void_p, ctypes.POINTER(c_int)]
        lib.soak_slot_state.restype = None
        lib.soak_slot_abandon.argtypes = [c_void_p]
        lib.soak_slot_abandon.restype = None
        lib.soak_response.argtypes = [c_void_p, c_uint32, c_void_p]  # for tests
        lib.soak_response.restype = None
        lib.soak_request_released.argtypes = [c_void_p, c_uint32, c_void_p]
        lib.soak_request_released.restype = None
        triton = triton_lib()
        lib.soak_native_init(
            *(  # looked up afresh: the addresses in the core, whatever wraps the attributes
                _address(triton[name])
                for name in (
                    "TRITONSERVER_ErrorNew",
                    "TRITONSERVER_InferenceResponseDelete",
                    "TRITONSERVER_ErrorDelete",
                )
            ),
            capi.ERROR_INTERNAL,
        )
        allocator = c_void_p()
        check(
            triton.TRITONSERVER_ResponseAllocatorNew(
                ctypes.byref(allocator),
                _address(lib.soak_alloc),
                _address(lib.soak_release_buffer),
                None,
            )
        )
        self.allocator = allocator
        self.response_ptr = c_void_p(_address(lib.soak_response))
        self.request_release_ptr = c_void_p(_address(lib.soak_request_released))
        self._per_thread = threading.local()  # each thread's array of taken responses
        self._live_lock = threading.Lock()
        self.live = 0  # slots made and not yet freed (abandoned ones stay)
        self._wait, self._take = lib.soak_slot_wait, lib.soak_slot_take

    def start(self, inf: Inference) -> None:
        slot = self.lib.soak_slot_new()
        if not slot:
            raise MemoryError("soak_slot_new: out of memory")
        inf.completions, inf.userp = self, slot
        with self._live_lock:
            self.live += 1

    def wait(self, inf: Inference, deadline: float) -> bool:
        return bool(self._wait(inf.userp, max(0.0, deadline - time.monotonic())))

    def drain(self, inf: Inference) -> None:
        try:
            taken = self._per_thread.taken
        except AttributeError:
            taken = self._per_thread.taken = (c_void_p * _TAKE_BATCH)()
        while True:
            n = self._take(inf.userp, taken, _TAKE_BATCH)
            inf.pending.extend(taken[i] for i in range(n))
            if n < _TAKE_BATCH:
                break
        lost = self.state(inf)["lost"]
        if lost and inf.error is None:
            inf.error = TritonError("soak", f"{lost} response(s) lost: out of memory")
        drain(inf)

    def state(self, inf: Inference) -> dict[str, int]:
        """The slot's flags and counts: final, released, deleted (came after it was
        abandoned), lost (could not be kept)."""
        out = (c_int * 4)()
        self.lib.soak_slot_state(inf.userp, out)
        return dict(zip(("final", "released", "deleted", "lost"), out, strict=True))

    def abandon(self, request: int, inf: Inference) -> None:
        inf.abandoned = True
        abandoned.append((request, inf))
        self.lib.soak_slot_abandon(inf.userp)

    def done(self, inf: Inference) -> None:
        if inf.userp:
            self.lib.soak_slot_free(inf.userp)
            inf.userp = 0
            with self._live_lock:
                self.live -= 1


def _address(fn: ctypes._CFuncPtr) -> int:
    return ctypes.cast(fn, c_void_p).value or 0


@functools.cache
def _load() -> tuple[NativeCompletions | None, str | None]:
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None, f"{ENV_SWITCH}=0: Triton's callbacks run in Python"
    try:
        return NativeCompletions(build()), None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or "").strip().splitlines()
        why = f"compiling {SOURCE.name} failed: {detail[-1] if detail else exc}"
    except (OSError, subprocess.SubprocessError) as exc:
        why = str(exc)
    return None, (
        f"soak's C callbacks are unavailable ({why}): Triton's callbacks run in Python, "
        "in-process traffic is slower"
    )


def completions() -> NativeCompletions | None:
    """The process's C callbacks, built and loaded on first use; None where there are none."""
    return _load()[0]


def why_not() -> str | None:
    """One line: why there are no C callbacks in this process, or None."""
    return _load()[1]
