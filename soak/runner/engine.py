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
from soak.workload.models import ModelSettings, UserModels, preflight

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
        user_models=user_models(profile),
    )


def user_models(profile: Profile) -> UserModels:
    """The profile's [models] and [model.<name>] tables as the workload's plain data."""
    settings = []
    for name in profile.models["load"]:
        given = profile.model[name]
        settings.append(
            ModelSettings(
                name,
                batch_size=given["batch_size"],
                shape={k: tuple(v) for k, v in given["shape"].items()},
                input_data=Path(given["input_data"]) if given["input_data"] else None,
                rtol=given["rtol"],
                atol=given["atol"],
            )
        )
    return UserModels(tuple(Path(r) for r in profile.models["repositories"]), tuple(settings))


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
        if self.config.user_models.models:  # one clear line now rather than N failures later
            preflight(self.config.user_models, self.runtime.backends_dir, self.triton_log)
        self.workload = Workload(
            self.config, self.workdir, self.runtime.backends_dir, self.triton_log, observer
        )

    def iterate(self, index: int) -> IterationRecord:
        return self.workload.run_iteration(index)
