"""The only package that knows the TRITONSERVER C API; everything above sees Python objects.

`setup()` finds and loads the core, assembles the python backend folder of a run and sets
the environment its stub processes inherit. Call it once per process, before any Server.
"""

from __future__ import annotations

import os
from pathlib import Path

from soak.triton import backends, capi
from soak.triton.memory import MemoryType, require
from soak.triton.server import (
    InferenceTimeout,
    Output,
    Runtime,
    Server,
    ServerOptions,
    TritonError,
    kept_response_count,
)

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


def setup(
    workdir: Path, home: str | os.PathLike | None = None, stub: Path | None = None
) -> Runtime:
    """Locate and load libtritonserver, build `<workdir>/backends`, export the stub environment."""
    install = capi.locate(home)
    backend = backends.assemble(install, Path(workdir) / "backends", stub=stub)
    loaded = capi.load(install)
    backends.apply_environment(backend)
    return Runtime(install, backend.backends_dir, loaded.api_version, backend.stub, backend.env)


def require_memory(
    memory_type: MemoryType, runtime: Runtime | None = None, device: int = 0
) -> None:
    """Refuse pinned/GPU memory where CUDA is absent (or lacks `device`), before any server."""
    require(memory_type, runtime.install.library_dir if runtime else None, device)
