"""Find libtritonserver, load it with its sibling libraries, and declare the C prototypes.

This is the only module that knows symbol names and C types of the TRITONSERVER API;
everything above it goes through `soak.triton.server`. Loading happens once per process.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import logging
import os
import threading
from ctypes import POINTER, c_bool, c_char_p, c_int, c_int64, c_size_t, c_uint32, c_uint64, c_void_p
from dataclasses import dataclass
from pathlib import Path

from soak.errors import EnvironmentProblem

log = logging.getLogger(__name__)

# Enums of tritonserver.h (API 1.x), as plain ints.
MODEL_CONTROL_EXPLICIT = 2
MEMORY_CPU, MEMORY_CPU_PINNED, MEMORY_GPU = 0, 1, 2
TYPE_INT32, TYPE_FP32 = 8, 11
#: TRITONSERVER_DataType by Triton's datatype name (as model metadata writes it).
DATATYPES = {
    "BOOL": 1,
    "UINT8": 2,
    "UINT16": 3,
    "UINT32": 4,
    "UINT64": 5,
    "INT8": 6,
    "INT16": 7,
    "INT32": 8,
    "INT64": 9,
    "FP16": 10,
    "FP32": 11,
    "FP64": 12,
    "BYTES": 13,
    "BF16": 14,
}
DATATYPE_NAMES = {code: name for name, code in DATATYPES.items()}
RESPONSE_FINAL = 1
RELEASE_ALL = 1
INDEX_FLAG_READY = 1
ERROR_UNKNOWN, ERROR_INTERNAL, ERROR_NOT_FOUND = 0, 1, 2
ERROR_INVALID_ARG, ERROR_UNAVAILABLE, ERROR_UNSUPPORTED, ERROR_ALREADY_EXISTS = 3, 4, 5, 6

ENV_HOME = "SOAK_TRITON_HOME"
CONTAINER_HOME = Path("/opt/tritonserver")


@dataclass(frozen=True)
class TritonInstall:
    """Where one Triton core lives: the library, its folder, backends and python stubs."""

    source: str  # "explicit", "container" or "nvidia-pytriton"
    library: Path
    library_dir: Path
    backends_dir: Path
    stubs_dir: Path | None  # per-Python-version stubs (wheel, soak-installed home); else None


def _from_home(home: Path, source: str) -> TritonInstall:
    lib = home / "lib" / "libtritonserver.so"
    if not lib.is_file():
        raise EnvironmentProblem(
            f"no Triton library at {lib} (from {source} Triton home {home}); expected an "
            "install laid out like NVIDIA's containers: <home>/lib/libtritonserver.so"
        )
    # A home laid out by `soak triton install` keeps the stubs of every Python it has.
    stubs = home / "python_backend_stubs"
    return TritonInstall(
        source, lib, lib.parent, home / "backends", stubs if stubs.is_dir() else None
    )


def _from_wheel() -> TritonInstall | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    libs = package.parent / "nvidia_pytriton.libs"
    found = sorted(glob.glob(str(libs / "libtritonserver*.so*")))
    if not found:
        return None
    core = package / "tritonserver"
    return TritonInstall(
        "nvidia-pytriton", Path(found[0]), libs, core / "backends", core / "python_backend_stubs"
    )


def locate(home: str | os.PathLike | None = None) -> TritonInstall:
    """Explicit home (argument, then $SOAK_TRITON_HOME), else /opt/tritonserver, else the wheel."""
    explicit = home or os.environ.get(ENV_HOME)
    if explicit:
        where = Path(explicit).expanduser()
        if not where.is_dir():
            what = "triton_home" if home else f"${ENV_HOME}"
            raise EnvironmentProblem(f"{what} points at {where}, which is not a directory")
        return _from_home(where, "explicit")
    if (CONTAINER_HOME / "lib" / "libtritonserver.so").is_file():
        return _from_home(CONTAINER_HOME, "container")
    wheel = _from_wheel()
    if wheel is None:
        raise EnvironmentProblem(
            "no Triton core found: install nvidia-pytriton==0.7.0 (make install does), "
            f"or set {ENV_HOME} to a Triton install such as /opt/tritonserver"
        )
    return wheel


def _preload_siblings(library: Path) -> None:
    """Load the library's neighbours RTLD_GLOBAL, retrying until no progress.

    This saves the user an LD_LIBRARY_PATH.
    """
    pending = [
        p
        for p in sorted(library.parent.glob("*.so*"))
        if p.is_file() and p != library and "libpython" not in p.name
    ]
    while pending:
        failed = []
        for path in pending:
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                failed.append(path)
        if len(failed) == len(pending):
            log.debug("could not preload %s", [p.name for p in failed])
            return
        pending = failed


_ERR = c_void_p  # TRITONSERVER_Error*; NULL is success
_P = c_void_p
_PP = POINTER(c_void_p)

# name -> argtypes; every function returns TRITONSERVER_Error* unless listed in _RESTYPES.
_PROTOTYPES: dict[str, list] = {
    "TRITONSERVER_ApiVersion": [POINTER(c_uint32), POINTER(c_uint32)],
    "TRITONSERVER_ErrorNew": [c_int, c_char_p],
    "TRITONSERVER_ErrorDelete": [_ERR],
    "TRITONSERVER_ErrorCode": [_ERR],
    "TRITONSERVER_ErrorCodeString": [_ERR],
    "TRITONSERVER_ErrorMessage": [_ERR],
    "TRITONSERVER_MessageSerializeToJson": [_P, POINTER(c_char_p), POINTER(c_size_t)],
    "TRITONSERVER_MessageDelete": [_P],
    "TRITONSERVER_ServerOptionsNew": [_PP],
    "TRITONSERVER_ServerOptionsDelete": [_P],
    "TRITONSERVER_ServerOptionsSetServerId": [_P, c_char_p],
    "TRITONSERVER_ServerOptionsSetModelRepositoryPath": [_P, c_char_p],
    "TRITONSERVER_ServerOptionsSetModelControlMode": [_P, c_int],
    "TRITONSERVER_ServerOptionsSetStrictModelConfig": [_P, c_bool],
    "TRITONSERVER_ServerOptionsSetStrictReadiness": [_P, c_bool],
    "TRITONSERVER_ServerOptionsSetExitTimeout": [_P, c_uint32],
    "TRITONSERVER_ServerOptionsSetModelLoadRetryCount": [_P, c_uint32],
    "TRITONSERVER_ServerOptionsSetBackendDirectory": [_P, c_char_p],
    "TRITONSERVER_ServerOptionsSetRepoAgentDirectory": [_P, c_char_p],
    "TRITONSERVER_ServerOptionsSetMinSupportedComputeCapability": [_P, ctypes.c_double],
    "TRITONSERVER_ServerOptionsSetLogInfo": [_P, c_bool],
    "TRITONSERVER_ServerOptionsSetLogWarn": [_P, c_bool],
    "TRITONSERVER_ServerOptionsSetLogError": [_P, c_bool],
    "TRITONSERVER_ServerOptionsSetLogVerbose": [_P, c_int],
    "TRITONSERVER_ServerOptionsSetLogFile": [_P, c_char_p],
    "TRITONSERVER_ServerOptionsSetMetrics": [_P, c_bool],
    "TRITONSERVER_ServerOptionsSetGpuMetrics": [_P, c_bool],
    "TRITONSERVER_ServerOptionsSetCpuMetrics": [_P, c_bool],
    "TRITONSERVER_ServerOptionsSetBackendConfig": [_P, c_char_p, c_char_p, c_char_p],
    "TRITONSERVER_ServerOptionsSetPinnedMemoryPoolByteSize": [_P, c_uint64],
    "TRITONSERVER_ServerOptionsSetCudaMemoryPoolByteSize": [_P, c_int, c_uint64],
    "TRITONSERVER_ServerOptionsSetCacheConfig": [_P, c_char_p, c_char_p],
    "TRITONSERVER_ServerOptionsSetCacheDirectory": [_P, c_char_p],
    "TRITONSERVER_ServerNew": [_PP, _P],
    "TRITONSERVER_ServerDelete": [_P],
    "TRITONSERVER_ServerStop": [_P],
    "TRITONSERVER_ServerIsLive": [_P, POINTER(c_bool)],
    "TRITONSERVER_ServerIsReady": [_P, POINTER(c_bool)],
    "TRITONSERVER_ServerModelIsReady": [_P, c_char_p, c_int64, POINTER(c_bool)],
    "TRITONSERVER_ServerMetadata": [_P, _PP],
    "TRITONSERVER_ServerModelIndex": [_P, c_uint32, _PP],
    "TRITONSERVER_ServerLoadModel": [_P, c_char_p],
    "TRITONSERVER_ServerUnloadModel": [_P, c_char_p],
    "TRITONSERVER_ServerModelStatistics": [_P, c_char_p, c_int64, _PP],
    "TRITONSERVER_ServerModelMetadata": [_P, c_char_p, c_int64, _PP],
    "TRITONSERVER_ServerModelConfig": [_P, c_char_p, c_int64, c_uint32, _PP],
    "TRITONSERVER_ServerInferAsync": [_P, _P, _P],
    "TRITONSERVER_ResponseAllocatorNew": [_PP, _P, _P, _P],
    "TRITONSERVER_ResponseAllocatorDelete": [_P],
    "TRITONSERVER_InferenceRequestNew": [_PP, _P, c_char_p, c_int64],
    "TRITONSERVER_InferenceRequestDelete": [_P],
    "TRITONSERVER_InferenceRequestSetId": [_P, c_char_p],
    "TRITONSERVER_InferenceRequestSetCorrelationId": [_P, c_uint64],
    "TRITONSERVER_InferenceRequestSetFlags": [_P, c_uint32],
    "TRITONSERVER_InferenceRequestAddInput": [_P, c_char_p, c_int, POINTER(c_int64), c_uint64],
    "TRITONSERVER_InferenceRequestAppendInputData": [_P, c_char_p, _P, c_size_t, c_int, c_int64],
    "TRITONSERVER_InferenceRequestAddRequestedOutput": [_P, c_char_p],
    "TRITONSERVER_InferenceRequestSetReleaseCallback": [_P, _P, _P],
    "TRITONSERVER_InferenceRequestSetResponseCallback": [_P, _P, _P, _P, _P],
    "TRITONSERVER_InferenceResponseDelete": [_P],
    "TRITONSERVER_InferenceResponseError": [_P],
    "TRITONSERVER_InferenceResponseOutputCount": [_P, POINTER(c_uint32)],
    "TRITONSERVER_InferenceResponseOutput": [
        _P,
        c_uint32,
        POINTER(c_char_p),
        POINTER(c_int),
        POINTER(POINTER(c_int64)),
        POINTER(c_uint64),
        _PP,
        POINTER(c_size_t),
        POINTER(c_int),
        POINTER(c_int64),
        _PP,
    ],
}
#: Symbols an older core may lack; a missing one is left unset, and its caller checks
#: `has()`. The load retry count came with the load retry itself (2.42): before it, a failed
#: load was not retried, which is what soak sets the count to (0). The cache options came with
#: cache libraries (2.30); a profile asking for a cache on a core without them is refused.
OPTIONAL = frozenset(
    {
        "TRITONSERVER_ServerOptionsSetModelLoadRetryCount",
        "TRITONSERVER_ServerOptionsSetCacheConfig",
        "TRITONSERVER_ServerOptionsSetCacheDirectory",
    }
)
_RESTYPES = {
    "TRITONSERVER_ErrorNew": _ERR,
    "TRITONSERVER_ErrorDelete": None,
    "TRITONSERVER_ErrorCode": c_int,
    "TRITONSERVER_ErrorCodeString": c_char_p,
    "TRITONSERVER_ErrorMessage": c_char_p,
}

# Callback shapes of tritonserver.h.
ALLOC_FN = ctypes.CFUNCTYPE(
    _ERR, _P, c_char_p, c_size_t, c_int, c_int64, _P, _PP, _PP, POINTER(c_int), POINTER(c_int64)
)
RELEASE_BUFFER_FN = ctypes.CFUNCTYPE(_ERR, _P, _P, _P, c_size_t, c_int, c_int64)
START_FN = ctypes.CFUNCTYPE(_ERR, _P, _P)
REQUEST_RELEASE_FN = ctypes.CFUNCTYPE(None, _P, c_uint32, _P)
RESPONSE_FN = ctypes.CFUNCTYPE(None, _P, c_uint32, _P)


@dataclass(frozen=True)
class LoadedLibrary:
    install: TritonInstall
    lib: ctypes.CDLL
    api_version: tuple[int, int]


_loaded: LoadedLibrary | None = None
_load_lock = threading.Lock()


def load(install: TritonInstall) -> LoadedLibrary:
    """Load the core once per process; a second, different install in one process is refused."""
    global _loaded
    with _load_lock:
        if _loaded is not None:
            if _loaded.install.library != install.library:
                raise EnvironmentProblem(
                    f"this process already loaded {_loaded.install.library}; "
                    f"cannot also load {install.library}"
                )
            return _loaded
        _preload_siblings(install.library)
        try:
            lib = ctypes.CDLL(str(install.library), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot load Triton library {install.library}: {exc}"
            ) from exc
        try:
            for name, argtypes in _PROTOTYPES.items():
                if name in OPTIONAL and not hasattr(lib, name):
                    continue
                fn = getattr(lib, name)
                fn.argtypes = argtypes
                fn.restype = _RESTYPES.get(name, _ERR)
        except AttributeError as exc:
            raise EnvironmentProblem(
                f"{install.library} is not a usable libtritonserver (missing symbol: {exc})"
            ) from exc
        major, minor = c_uint32(), c_uint32()
        err = lib.TRITONSERVER_ApiVersion(ctypes.byref(major), ctypes.byref(minor))
        if err or major.value != 1:
            raise EnvironmentProblem(
                f"{install.library} speaks TRITONSERVER API {major.value}.{minor.value}; "
                "soak needs 1.x"
            )
        _loaded = LoadedLibrary(install, lib, (major.value, minor.value))
        log.info(
            "loaded %s (API %d.%d, from %s)",
            install.library,
            major.value,
            minor.value,
            install.source,
        )
        return _loaded


def has(name: str) -> bool:
    """Whether the loaded core has the OPTIONAL symbol `name`."""
    return hasattr(loaded().lib, name)


def loaded() -> LoadedLibrary:
    if _loaded is None:
        raise EnvironmentProblem("the Triton library is not loaded yet (call soak.triton.setup)")
    return _loaded
