"""What one in-process server is built from (`ServerOptions`, plain data) and the
TRITONSERVER_ServerNew that builds it, under the lock that ServerNew and ServerDelete share."""

from __future__ import annotations

import contextlib
import ctypes
import threading
from ctypes import byref, c_void_p
from dataclasses import dataclass
from pathlib import Path

from soak.triton import capi
from soak.triton.returns import TritonError, check, triton_lib


@dataclass(frozen=True)
class ServerOptions:
    """What one server is built from; plain data, turned into TRITONSERVER options per server."""

    repositories: tuple[Path, ...]
    backends_dir: Path
    server_id: str = "soak"
    strict_readiness: bool = True
    strict_model_config: bool = True
    exit_timeout_s: int = 30
    model_load_retry_count: int = 0
    log_file: Path | None = None
    log_verbose: int = 0
    metrics: bool = False
    min_compute_capability: float | None = None
    pinned_pool_bytes: int | None = None
    serialize_new_delete: bool = True  # see NEW_DELETE
    # The response cache: "" none, else a cache library's name ("local") with its JSON
    # config (local: {"size": bytes}); its folder defaults to the install's caches/.
    cache: str = ""
    cache_config: str = "{}"
    cache_dir: Path | None = None


def _set_cache(lib: ctypes.CDLL, opts: c_void_p, options: ServerOptions) -> None:
    """The response cache: its library folder (the install's caches/ beside backends/) and
    config; a core without the cache options cannot have one."""
    if not capi.has("TRITONSERVER_ServerOptionsSetCacheConfig"):
        raise TritonError("soak", "this Triton core has no response cache options (before 2.30)")
    folder = options.cache_dir or capi.loaded().install.backends_dir.parent / "caches"
    check(lib.TRITONSERVER_ServerOptionsSetCacheDirectory(opts, str(folder).encode()))
    check(
        lib.TRITONSERVER_ServerOptionsSetCacheConfig(
            opts, options.cache.encode(), options.cache_config.encode()
        )
    )


#: Triton 2.51 keeps one PinnedMemoryManager per process. ServerNew creates it without a lock
#: when there is none (`if (instance_ != nullptr) ...; instance_.reset(new ...)`), and every
#: ServerDelete destroys it (~InferenceServer calls PinnedMemoryManager::Reset). Two ServerNew
#: at once, or one during another server's ServerDelete, can free the manager under a running
#: Create: SIGSEGV in PinnedMemoryManager::AddPinnedMemoryBuffer, or glibc's "double free or
#: corruption" (tests/triton/test_server_creation.py). Servers whose options ask for it
#: (the default) take this lock around both calls.
NEW_DELETE = threading.Lock()


def new_delete_guard(options: ServerOptions) -> contextlib.AbstractContextManager:
    return NEW_DELETE if options.serialize_new_delete else contextlib.nullcontext()


def create(options: ServerOptions) -> int:
    """TRITONSERVER_ServerNew from `options` (under `new_delete_guard`); the options object is
    deleted whatever happens."""
    lib = triton_lib()
    opts = c_void_p()
    check(lib.TRITONSERVER_ServerOptionsNew(byref(opts)))
    try:
        for repo in options.repositories:
            check(lib.TRITONSERVER_ServerOptionsSetModelRepositoryPath(opts, str(repo).encode()))
        check(lib.TRITONSERVER_ServerOptionsSetServerId(opts, options.server_id.encode()))
        check(lib.TRITONSERVER_ServerOptionsSetModelControlMode(opts, capi.MODEL_CONTROL_EXPLICIT))
        check(lib.TRITONSERVER_ServerOptionsSetStrictReadiness(opts, options.strict_readiness))
        check(lib.TRITONSERVER_ServerOptionsSetStrictModelConfig(opts, options.strict_model_config))
        check(lib.TRITONSERVER_ServerOptionsSetExitTimeout(opts, options.exit_timeout_s))
        # Set explicitly: left alone, a failing load (initialize raising) was seen retried
        # every 0.35 s forever in about half of the processes (libtritonserver 2.51).
        # Cores before 2.42 have neither the option nor the retry.
        if capi.has("TRITONSERVER_ServerOptionsSetModelLoadRetryCount"):
            check(
                lib.TRITONSERVER_ServerOptionsSetModelLoadRetryCount(
                    opts, options.model_load_retry_count
                )
            )
        check(
            lib.TRITONSERVER_ServerOptionsSetBackendDirectory(
                opts, str(options.backends_dir).encode()
            )
        )
        check(lib.TRITONSERVER_ServerOptionsSetMetrics(opts, options.metrics))
        check(lib.TRITONSERVER_ServerOptionsSetGpuMetrics(opts, options.metrics))
        check(lib.TRITONSERVER_ServerOptionsSetCpuMetrics(opts, options.metrics))
        check(lib.TRITONSERVER_ServerOptionsSetLogInfo(opts, options.log_verbose > 0))
        check(lib.TRITONSERVER_ServerOptionsSetLogWarn(opts, True))
        check(lib.TRITONSERVER_ServerOptionsSetLogError(opts, True))
        check(lib.TRITONSERVER_ServerOptionsSetLogVerbose(opts, options.log_verbose))
        if options.log_file is not None:
            check(lib.TRITONSERVER_ServerOptionsSetLogFile(opts, str(options.log_file).encode()))
        if options.min_compute_capability is not None:
            check(
                lib.TRITONSERVER_ServerOptionsSetMinSupportedComputeCapability(
                    opts, options.min_compute_capability
                )
            )
        if options.pinned_pool_bytes is not None:
            check(
                lib.TRITONSERVER_ServerOptionsSetPinnedMemoryPoolByteSize(
                    opts, options.pinned_pool_bytes
                )
            )
        if options.cache:
            _set_cache(lib, opts, options)
        handle = c_void_p()
        with new_delete_guard(options):
            check(lib.TRITONSERVER_ServerNew(byref(handle), opts))
    finally:
        lib.TRITONSERVER_ServerOptionsDelete(opts)
    return handle.value
