"""What one lifecycle records: the seconds of each phase, its counts, its failures, and the
hang that ends it (`PhaseHung`), for the iteration to store and the supervisor to judge."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from soak.workload.counters import Counted


@dataclass(frozen=True)
class Failure:
    instance: int
    phase: str
    message: str


@dataclass
class LifecycleRecord:
    instance: int
    phase_s: dict[str, float] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    model_loads: int = 0
    failed_loads: int = 0  # loads that failed as the behaviour expects
    inferences: int = 0  # requests that completed: responses and expected errors
    errors: int = 0  # requests that ended in the expected error
    responses: int = 0  # responses received: one per request, any number when decoupled
    cache_hits: int = 0  # response cache hits and misses (insertions) Triton counted
    cache_insertions: int = 0
    completed: bool = False  # reached delete
    hung_phase: str | None = None
    triton_version: str | None = None
    # Per generated model this iteration: (successes, expected errors) soak counted.
    per_model: dict[str, tuple[int, int]] = field(default_factory=dict)
    counted: Counted | None = None  # what the server's /metrics counted (None: no /metrics)

    def answered(self, model: str, ok: int = 0, errors: int = 0) -> None:
        seen_ok, seen_errors = self.per_model.get(model, (0, 0))
        self.per_model[model] = (seen_ok + ok, seen_errors + errors)


class PhaseHung(Exception):
    """A call into Triton overran its phase timeout and is still running."""

    def __init__(self, instance: int, phase: str, timeout_s: float, what: str = "") -> None:
        super().__init__(f"instance {instance}: phase {phase} still running after {timeout_s:g} s")
        self.instance = instance
        self.phase = phase
        self.timeout_s = timeout_s
        self.what = what  # which call, naming its model ("inference on m"); '' when unknown


PhaseObserver = Callable[..., None]  # (instance, phase, timeout_s, detail="")
