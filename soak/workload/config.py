"""What one lifecycle is told: its repositories, target, behaviour, counts and the seconds each
phase may take (built from the profile by `soak.workload.iteration`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from soak.phases import PHASE_TIMEOUTS_S
from soak.target import default_target
from soak.target.interface import MemoryType, ServerFeatures, ServerTarget
from soak.workload import inject
from soak.workload.models import UserModels
from soak.workload.repos import Behaviour


@dataclass(frozen=True)
class PhaseTimeouts:
    """Seconds each phase may take before the run is declared hung; the defaults are the
    profile's too (`soak.phases.PHASE_TIMEOUTS_S`), so a profile that says nothing gets these."""

    server_new: float = PHASE_TIMEOUTS_S["server_new"]
    wait_ready: float = PHASE_TIMEOUTS_S["wait_ready"]
    load: float = PHASE_TIMEOUTS_S["load"]
    infer: float = PHASE_TIMEOUTS_S["infer"]
    statistics: float = PHASE_TIMEOUTS_S["statistics"]
    unload: float = PHASE_TIMEOUTS_S["unload"]
    isolation: float = PHASE_TIMEOUTS_S["isolation"]
    stop: float = PHASE_TIMEOUTS_S["stop"]
    delete: float = PHASE_TIMEOUTS_S["delete"]

    def of(self, phase: str) -> float:
        return float(getattr(self, phase))


@dataclass(frozen=True)
class LifecycleConfig:
    instance: int
    common_repo: Path
    own_repo: Path
    backends_dir: Path
    other_model: str | None = None  # another instance's model: loading it must fail
    memory_type: MemoryType = MemoryType.SYSTEM
    gpu_device: int = 0  # where GPU buffers (and the GPU injection) go
    inferences_per_model: int = 10
    concurrency: int = 1  # requests in flight per server
    datatype: str = "int32"
    timeouts: PhaseTimeouts = field(default_factory=PhaseTimeouts)
    log_file: Path | None = None
    injection: inject.Injection = field(default_factory=inject.Injection)
    seed: int = 0
    behaviour: Behaviour = Behaviour.CORRECT  # what the models are expected to do
    error_fraction: float = 1.0  # share of requests an error behaviour fails
    user_models: UserModels = field(default_factory=UserModels)  # loaded alongside
    target: ServerTarget = field(default_factory=default_target)  # what makes the server
    features: ServerFeatures = field(default_factory=ServerFeatures)
    composed: tuple[str, ...] = ()  # generated models over the add/sub one (workload.composed)
