"""N lifecycles in N threads, released together by a barrier: truly concurrent servers.

Triton's C++ multi-server test holds a mutex around each lifecycle and so runs them one
after another; here they overlap, which is what a process hosting several servers does.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from soak.phases import PHASES
from soak.triton import MemoryType
from soak.workload import inject
from soak.workload.lifecycle import (
    Failure,
    Lifecycle,
    LifecycleConfig,
    LifecycleRecord,
    PhaseHung,
    PhaseObserver,
    PhaseTimeouts,
)
from soak.workload.models import UserModels
from soak.workload.repos import own_model_name, write_repositories

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkloadConfig:
    """Everything the workload needs, as plain data (profiles map onto it)."""

    servers: int = 2
    memory_type: MemoryType = MemoryType.SYSTEM
    instance_kind: str = "cpu"
    gpu_device: int = 0
    inferences_per_model: int = 10
    datatype: str = "int32"
    timeouts: PhaseTimeouts = field(default_factory=PhaseTimeouts)
    injection: inject.Injection = field(default_factory=inject.Injection)
    user_models: UserModels = field(default_factory=UserModels)


@dataclass
class IterationRecord:
    index: int
    wall_s: float
    lifecycles: list[LifecycleRecord]
    hung: PhaseHung | None = None

    @property
    def failures(self) -> list[Failure]:
        return [f for r in self.lifecycles for f in r.failures]

    @property
    def server_lifecycles(self) -> int:
        return sum(1 for r in self.lifecycles if r.completed)

    @property
    def model_loads(self) -> int:
        return sum(r.model_loads for r in self.lifecycles)

    @property
    def inferences(self) -> int:
        return sum(r.inferences for r in self.lifecycles)

    def phase_sum_s(self) -> dict[str, float]:
        return {p: sum(r.phase_s.get(p, 0.0) for r in self.lifecycles) for p in PHASES}

    def phase_max_s(self) -> dict[str, float]:
        return {
            p: max((r.phase_s.get(p, 0.0) for r in self.lifecycles), default=0.0) for p in PHASES
        }

    @property
    def triton_version(self) -> str | None:
        return next((r.triton_version for r in self.lifecycles if r.triton_version), None)


class Workload:
    """Writes the repositories once, then runs iterations of N concurrent lifecycles."""

    def __init__(
        self,
        config: WorkloadConfig,
        workdir: Path,
        backends_dir: Path,
        log_file: Path | None = None,
        observer: PhaseObserver | None = None,
    ) -> None:
        self.config = config
        self.backends_dir = backends_dir
        self.log_file = log_file
        self.observer = observer
        self.common, self.unique = write_repositories(
            workdir / "models",
            config.servers,
            config.datatype,
            config.instance_kind,
            config.gpu_device,
        )
        self.leaker = inject.ResponseLeaker(config.injection.unreleased_response_fraction)

    def lifecycle_config(self, instance: int, iteration: int) -> LifecycleConfig:
        n = self.config.servers
        other = own_model_name((instance + 1) % n) if n > 1 else own_model_name(instance + 1)
        return LifecycleConfig(
            instance=instance,
            common_repo=self.common,
            own_repo=self.unique[instance],
            backends_dir=self.backends_dir,
            other_model=other,
            memory_type=self.config.memory_type,
            gpu_device=self.config.gpu_device,
            inferences_per_model=self.config.inferences_per_model,
            datatype=self.config.datatype,
            timeouts=self.config.timeouts,
            log_file=self.log_file,
            injection=self.config.injection,
            seed=iteration * 1000 + instance,
            user_models=self.config.user_models,
        )

    def run_iteration(self, index: int) -> IterationRecord:
        """Run N lifecycles released together; a hung one is reported in `hung`, not raised."""
        n = self.config.servers
        barrier = threading.Barrier(n)
        records: list[LifecycleRecord | None] = [None] * n
        hung: list[PhaseHung] = []

        def one(i: int) -> None:
            cfg = self.lifecycle_config(i, index)
            life = Lifecycle(cfg, self.observer, self.leaker)
            try:
                barrier.wait()
                records[i] = life.run()
            except PhaseHung as exc:
                records[i] = life.record
                hung.append(exc)
            except Exception as exc:  # noqa: BLE001 - becomes a recorded failure
                life.record.failures.append(Failure(i, "lifecycle", f"{type(exc).__name__}: {exc}"))
                records[i] = life.record

        start = time.perf_counter()
        threads = [
            threading.Thread(target=one, args=(i,), name=f"soak-instance-{i}", daemon=True)
            for i in range(n)
        ]
        for t in threads:
            t.start()
        limit = sum(self.config.timeouts.of(p) for p in PHASES) + 30
        for t in threads:
            t.join(max(0.0, limit - (time.perf_counter() - start)))
        if not hung and any(t.is_alive() for t in threads):
            hung.append(PhaseHung(-1, "iteration", limit))
        inject.per_iteration(self.config.injection)
        done = [r if r is not None else LifecycleRecord(i) for i, r in enumerate(records)]
        return IterationRecord(index, time.perf_counter() - start, done, hung[0] if hung else None)
