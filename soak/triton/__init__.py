"""The only package that knows the TRITONSERVER C API; everything above sees Python objects.

`setup()` finds and loads the core, assembles the python backend folder of a run and sets
the environment its stub processes inherit. Call it once per process, before any Server.
The names below load the C API binding only when first used, so that `soak.triton.facts`
(Triton's formats and conventions) imports without it.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from soak.triton.memory import MemoryType
    from soak.triton.server import (
        InferenceTimeout,
        Output,
        Runtime,
        Server,
        ServerOptions,
        TritonError,
        kept_response_count,
    )

_LAZY = {
    "InferenceTimeout": "soak.triton.server",
    "MemoryType": "soak.triton.memory",
    "Output": "soak.triton.server",
    "Runtime": "soak.triton.server",
    "Server": "soak.triton.server",
    "ServerOptions": "soak.triton.server",
    "TritonError": "soak.triton.server",
    "kept_response_count": "soak.triton.server",
}

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def setup(
    workdir: Path, home: str | os.PathLike | None = None, stub: Path | None = None
) -> Runtime:
    """Locate and load libtritonserver, build `<workdir>/backends`, export the stub environment."""
    from soak.triton import backends, capi
    from soak.triton.server import Runtime

    install = capi.locate(home)
    backend = backends.assemble(install, Path(workdir) / "backends", stub=stub)
    loaded = capi.load(install)
    backends.apply_environment(backend)
    return Runtime(install, backend.backends_dir, loaded.api_version, backend.stub, backend.env)


def require_memory(
    memory_type: MemoryType, runtime: Runtime | None = None, device: int = 0
) -> None:
    """Refuse pinned/GPU memory where CUDA is absent (or lacks `device`), before any server."""
    from soak.triton.memory import require

    require(memory_type, runtime.install.library_dir if runtime else None, device)
