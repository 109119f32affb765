"""The in-worker engine: turns a profile into a workload and runs its iterations.

It owns the Triton runtime of the process; the worker wraps it with the message protocol.
"""

from __future__ import annotations

import logging
from pathlib import Path

from soak.profile import Profile
from soak.triton import MemoryType, Runtime, require_memory, setup
from soak.workload.inject import Injection
from soak.workload.iteration import IterationRecord, Workload, WorkloadConfig
from soak.workload.lifecycle import PhaseObserver, PhaseTimeouts

log = logging.getLogger(__name__)


def workload_config(profile: Profile) -> WorkloadConfig:
    return WorkloadConfig(
        servers=profile.run["servers"],
        memory_type=MemoryType(profile.run["memory_type"]),
        instance_kind=profile.run["instance_kind"],
        gpu_device=profile.run.get("gpu_device", 0),
        inferences_per_model=profile.run["inferences_per_model"],
        datatype=profile.run["datatype"],
        timeouts=PhaseTimeouts(**profile.timeouts),
        injection=Injection(**profile.inject),
    )


class Engine:
    """Set up once (library, backend folder, repositories), then one call per iteration."""

    def __init__(
        self,
        profile: Profile,
        workdir: Path,
        observer: PhaseObserver | None = None,
        stub: Path | None = None,
    ) -> None:
        self.profile = profile
        self.workdir = Path(workdir)
        self.config = workload_config(profile)
        self.runtime: Runtime = setup(self.workdir, profile.run["triton_home"] or None, stub=stub)
        device = self.config.gpu_device
        require_memory(self.config.memory_type, self.runtime, device)
        if self.config.instance_kind == "gpu" or self.config.injection.gpu_bytes_per_server:
            require_memory(MemoryType.GPU, self.runtime, device)
        self.triton_log = self.workdir / "triton.log"
        self.workload = Workload(
            self.config, self.workdir, self.runtime.backends_dir, self.triton_log, observer
        )

    def iterate(self, index: int) -> IterationRecord:
        return self.workload.run_iteration(index)
