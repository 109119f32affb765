"""N lifecycles in N threads, released together by a barrier: truly concurrent servers.

Triton's C++ multi-server test holds a mutex around each lifecycle and so runs them one
after another; here they overlap, which is what a process hosting several servers does.
`Workload` is what every scenario shares; `soak.workload.scenarios` holds the scenarios.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from soak.phases import PHASES
from soak.target import default_target
from soak.target.interface import MemoryType, ServerFeatures, ServerTarget
from soak.workload import inject
from soak.workload.composed import write_composed
from soak.workload.config import LifecycleConfig, PhaseTimeouts
from soak.workload.counters import Counted
from soak.workload.lifecycle import Lifecycle
from soak.workload.models import UserModels
from soak.workload.record import Failure, LifecycleRecord, PhaseHung, PhaseObserver
from soak.workload.repos import (
    DEFAULT_MESSAGE_CHARS,
    Behaviour,
    own_model_name,
    write_repositories,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkloadConfig:
    """Everything the workload needs, as plain data (profiles map onto it)."""

    servers: int = 2
    memory_type: MemoryType = MemoryType.SYSTEM
    instance_kind: str = "cpu"
    gpu_device: int = 0
    inferences_per_model: int = 10
    concurrency: int = 1  # requests in flight per server
    datatype: str = "int32"
    timeouts: PhaseTimeouts = field(default_factory=PhaseTimeouts)
    injection: inject.Injection = field(default_factory=inject.Injection)
    user_models: UserModels = field(default_factory=UserModels)
    scenario: str = "servers"  # servers | reload | traffic (soak.workload.scenarios)
    behaviour: Behaviour = Behaviour.CORRECT
    error_fraction: float = 1.0
    error_message_chars: int = DEFAULT_MESSAGE_CHARS
    reload_new_version: bool = False
    features: ServerFeatures = field(default_factory=ServerFeatures)
    generated_ensemble: bool = False  # repos.write_composed
    bls: str = "off"  # off | sync | async (repos.write_composed)
    target: ServerTarget = field(default_factory=default_target)  # soak.target.make_target


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
    def failed_loads(self) -> int:
        return sum(r.failed_loads for r in self.lifecycles)

    @property
    def inferences(self) -> int:
        return sum(r.inferences for r in self.lifecycles)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.lifecycles)

    @property
    def responses(self) -> int:
        return sum(r.responses for r in self.lifecycles)

    @property
    def cache_hits(self) -> int:
        return sum(r.cache_hits for r in self.lifecycles)

    @property
    def cache_insertions(self) -> int:
        return sum(r.cache_insertions for r in self.lifecycles)

    def phase_sum_s(self) -> dict[str, float]:
        return {p: sum(r.phase_s.get(p, 0.0) for r in self.lifecycles) for p in PHASES}

    def phase_max_s(self) -> dict[str, float]:
        return {
            p: max((r.phase_s.get(p, 0.0) for r in self.lifecycles), default=0.0) for p in PHASES
        }

    @property
    def counted(self) -> Counted | None:
        """What the servers' /metrics counted this iteration, summed (None: not measured)."""
        found = [r.counted for r in self.lifecycles if r.counted is not None]
        if not found:
            return None
        total = Counted()
        for c in found:
            total.add(c)
        return total

    @property
    def triton_version(self) -> str | None:
        return next((r.triton_version for r in self.lifecycles if r.triton_version), None)


class Workload:
    """What every scenario shares: the repositories written once, the lifecycle settings of
    each server, and N lifecycles stepped together in threads. A scenario says what one
    iteration does (`run_iteration`) and what ends with the run (`close`)."""

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
            config.behaviour,
            config.error_message_chars,
            config.gpu_device,
        )
        self.composed = write_composed(
            self.common, config.generated_ensemble, config.bls, config.behaviour
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
            concurrency=self.config.concurrency,
            datatype=self.config.datatype,
            timeouts=self.config.timeouts,
            log_file=self.log_file,
            injection=self.config.injection,
            seed=iteration * 1000 + instance,
            user_models=self.config.user_models,
            behaviour=self.config.behaviour,
            error_fraction=self.config.error_fraction,
            target=self.config.target,
            features=self.config.features,
            composed=self.composed,
        )

    def run_iteration(self, index: int) -> IterationRecord:
        """One iteration of the scenario; a hung lifecycle is reported in `hung`, not raised."""
        raise NotImplementedError

    def close(self) -> list[Failure]:
        """End what outlives iterations; the failures of doing so."""
        raise NotImplementedError

    def concurrently(
        self, index: int, lives: list[Lifecycle], step: Callable[[Lifecycle], object]
    ) -> IterationRecord:
        """`step(life)` for each lifecycle in its own thread, released together by a barrier;
        a Python error becomes a recorded failure, a hung call the record's `hung`."""
        start = time.perf_counter()
        hung = self.in_threads(lives, step)
        inject.per_iteration(self.config.injection)
        records = [life.record for life in lives]
        return IterationRecord(index, time.perf_counter() - start, records, hung)

    def in_threads(
        self, lives: list[Lifecycle], step: Callable[[Lifecycle], object]
    ) -> PhaseHung | None:
        """Run `step` on every lifecycle at once; the first hang, if any."""
        if not lives:
            return None
        barrier = threading.Barrier(len(lives))
        hung: list[PhaseHung] = []

        def run(life: Lifecycle) -> None:
            try:
                barrier.wait()
                step(life)
            except PhaseHung as exc:
                hung.append(exc)
            except Exception as exc:  # noqa: BLE001 - becomes a recorded failure
                life.record.failures.append(
                    Failure(life.config.instance, "lifecycle", f"{type(exc).__name__}: {exc}")
                )

        start = time.perf_counter()
        threads = [
            threading.Thread(
                target=run, args=(life,), name=f"soak-instance-{life.config.instance}", daemon=True
            )
            for life in lives
        ]
        for t in threads:
            t.start()
        limit = sum(self.config.timeouts.of(p) for p in PHASES) + 30
        for t in threads:
            t.join(max(0.0, limit - (time.perf_counter() - start)))
        if not hung and any(t.is_alive() for t in threads):
            hung.append(PhaseHung(-1, "iteration", limit))
        return hung[0] if hung else None
