"""Servers inside the worker process through the C API binding (`soak.triton`).

The worker is then both the client and the server: it is the one process to sample, and the
server-side injections (native and GPU bytes per server) are made in it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from soak.target.interface import MemoryType, ServerSpec, TargetInfo
from soak.triton import native, require_memory, setup
from soak.triton.creation import ServerOptions
from soak.triton.server import Server

if TYPE_CHECKING:
    from soak.workload.inject import Injection


@dataclass(frozen=True)
class InProcessTarget:
    """`triton_home` picks the install (None: soak.triton.capi's search order);
    `serialize_new_delete` takes soak.triton.creation.NEW_DELETE around ServerNew/Delete."""

    name: ClassVar[str] = "in-process"
    writes_repositories: ClassVar[bool] = True
    #: Allocation sites come from memray tracing the worker, which hosts the servers.
    attribution: ClassVar[str] = "memray"
    triton_home: str | None = None
    serialize_new_delete: bool = True

    def prepare(
        self,
        workdir: Path,
        memory: Sequence[MemoryType] = (),
        device: int = 0,
        stub: Path | None = None,
    ) -> TargetInfo:
        runtime = setup(workdir, self.triton_home, stub=stub)
        for memory_type in memory:
            require_memory(memory_type, runtime, device)
        why_python = native.why_not()  # builds the C callbacks now, not in the first burst
        return TargetInfo(
            runtime.backends_dir,
            str(runtime.install.library),
            runtime.install.source,
            ".".join(map(str, runtime.api_version)),
            notes=(why_python,) if why_python else (),
        )

    def new_server(self, spec: ServerSpec) -> Server:
        return Server(
            ServerOptions(
                repositories=spec.repositories,
                backends_dir=spec.backends_dir,
                server_id=spec.server_id,
                exit_timeout_s=spec.exit_timeout_s,
                log_file=spec.log_file,
                serialize_new_delete=self.serialize_new_delete,
                strict_model_config=spec.features.strict_model_config,
                cache=spec.features.response_cache,
                cache_config=json.dumps({"size": spec.features.response_cache_bytes}),
            )
        )

    def inject_server_leaks(self, injection: Injection, device: int = 0) -> None:
        from soak.workload import inject

        inject.leak_native(injection.native_bytes_per_server)
        inject.leak_gpu(injection.gpu_bytes_per_server, device)

    def server_pids(self) -> list[int]:
        return [os.getpid()]

    def client_pid(self) -> int:
        return os.getpid()

    def phase_floors(self) -> dict[str, float]:
        return {}

    def take_leftovers(self) -> list[tuple[str, str]]:
        return []

    def watch_crashes(self, report: Callable[[str], None]) -> None:
        return None

    def stop_all(self) -> None:
        return None  # in-process servers end with the worker
