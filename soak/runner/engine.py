"""The in-worker engine: turns a profile into a workload and runs its iterations.

It owns the Triton runtime of the process; the worker wraps it with the message protocol.
"""

from __future__ import annotations

import logging
from pathlib import Path

from soak.profile import Profile
from soak.triton import MemoryType, Runtime, require_memory, setup
from soak.workload.inject import Injection
from soak.workload.iteration import IterationRecord, WorkloadConfig
from soak.workload.lifecycle import Failure, PhaseObserver, PhaseTimeouts
from soak.workload.repos import Behaviour
from soak.workload.scenarios import make_workload

log = logging.getLogger(__name__)


def workload_config(profile: Profile) -> WorkloadConfig:
    return WorkloadConfig(
        servers=profile.run["servers"],
        memory_type=MemoryType(profile.run["memory_type"]),
        instance_kind=profile.run["instance_kind"],
        inferences_per_model=profile.run["inferences_per_model"],
        datatype=profile.run["datatype"],
        timeouts=PhaseTimeouts(**profile.timeouts),
        injection=Injection(**profile.inject),
        scenario=profile.run["scenario"],
        behaviour=Behaviour(profile.run["behaviour"]),
        error_fraction=profile.run["error_fraction"],
        error_message_chars=profile.run["error_message_chars"],
        reload_new_version=profile.run["reload_new_version"],
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
        require_memory(self.config.memory_type, self.runtime)
        if self.config.instance_kind == "gpu" or self.config.injection.gpu_bytes_per_server:
            require_memory(MemoryType.GPU, self.runtime)
        self.triton_log = self.workdir / "triton.log"
        self.workload = make_workload(
            self.config, self.workdir, self.runtime.backends_dir, self.triton_log, observer
        )

    def iterate(self, index: int) -> IterationRecord:
        return self.workload.run_iteration(index)

    def close(self) -> list[Failure]:
        """Delete the servers that outlive iterations (reload, traffic), once."""
        return self.workload.close()
