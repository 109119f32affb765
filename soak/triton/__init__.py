"""The only package that knows the TRITONSERVER C API; everything above sees Python objects.

`setup()` finds and loads the core, assembles the python backend folder of a run and sets
the environment its stub processes inherit. Call it once per process, before any Server.

The names below are imported when first used: `soak.triton.facts` must import without the
C API (the supervisor reads it and never hosts Triton).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from soak.target.interface import Output
    from soak.triton.callbacks import kept_response_count
    from soak.triton.creation import ServerOptions
    from soak.triton.memory import MemoryType
    from soak.triton.returns import InferenceTimeout, TritonError
    from soak.triton.server import Runtime, Server

__all__ = [
    "InferenceTimeout",
    "MemoryType",
    "Output",
    "Runtime",
    "Server",
    "ServerOptions",
    "TritonError",
    "kept_response_count",
    "require_memory",
    "setup",
]

_HOMES = {
    "MemoryType": "soak.triton.memory",
    "Output": "soak.target.interface",
    "kept_response_count": "soak.triton.callbacks",
    "ServerOptions": "soak.triton.creation",
    "InferenceTimeout": "soak.triton.returns",
    "TritonError": "soak.triton.returns",
    "Runtime": "soak.triton.server",
    "Server": "soak.triton.server",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'soak.triton' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


#: The GIL switch interval of a process that runs Triton in it (Python's default: 5 ms).
GIL_SWITCH_INTERVAL_S = 0.001
#: gRPC's switch for its fork handlers (see `setup`).
GRPC_FORK_ENV = "GRPC_ENABLE_FORK_SUPPORT"


def setup(
    workdir: Path, home: str | os.PathLike | None = None, stub: Path | None = None
) -> Runtime:
    """Locate and load libtritonserver, build `<workdir>/backends`, export the stub environment.

    Also shortens the interpreter's GIL switch interval to GIL_SWITCH_INTERVAL_S: every
    response and release reaches soak on a Triton thread that must take the GIL, and at
    Python's default 5 ms those threads wait behind the thread submitting the next requests
    (measured, traffic N=1 on 2 cores: c=1 1,800 -> 2,180-2,500 inferences/s, c=4 2,610-2,910
    -> 2,930-3,330).

    And it turns gRPC's fork handlers off (GRPC_ENABLE_FORK_SUPPORT=0, unless set) for a gRPC
    not yet started in this process: the python backend forks each stub from this process,
    and with gRPC loaded (grpcio 1.85) its child handler can block the child on a lock for
    good before exec (seen: a test process with pytest's command line, one thread, in
    grpc's postfork handler under __libc_fork), so the stub never starts and the load hangs.
    soak's own worker never loads gRPC; a program that hosts Triton beside a gRPC client
    should set the variable before gRPC starts."""
    import sys

    from soak.triton import backends, capi
    from soak.triton.server import Runtime

    install = capi.locate(home)
    backend = backends.assemble(install, Path(workdir) / "backends", stub=stub)
    loaded = capi.load(install)
    sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
    os.environ.setdefault(GRPC_FORK_ENV, "0")
    backends.apply_environment(backend)
    return Runtime(install, backend.backends_dir, loaded.api_version, backend.stub, backend.env)


def require_memory(
    memory_type: MemoryType, runtime: Runtime | None = None, device: int = 0
) -> None:
    """Refuse pinned/GPU memory where CUDA is absent (or lacks `device`), before any server."""
    from soak.triton.memory import require

    require(memory_type, runtime.install.library_dir if runtime else None, device)
