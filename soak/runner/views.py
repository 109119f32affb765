"""What a supervised run tells its callers: a view per quiet point and per phase, and the
run's outcome. Plain records, so that progress displays import them without the supervisor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from soak.phases import PHASES


@dataclass
class IterationView:
    """What progress displays need after each quiet point."""

    iteration: int
    iterations: int
    wall_s: float
    rss_bytes: int | None
    rss_delta_bytes: int | None
    fds: int | None
    threads: int | None
    failures_total: int
    phase_max_s: dict[str, float]
    failures: list[dict[str, Any]]


@dataclass(frozen=True)
class PhaseView:
    """Where an iteration stands, for a progress display between quiet points: the phase an
    instance just entered and the phase every server of this iteration is in."""

    iteration: int
    iterations: int
    servers: int
    phase: str
    phases: dict[int, str]  # instance -> the phase it is in

    @property
    def servers_done(self) -> int:
        """Servers at the last phase of their lifecycle (delete, which takes milliseconds)."""
        return sum(1 for p in self.phases.values() if p == PHASES[-1])


@dataclass
class RunOutcome:
    run_id: int
    status: str  # running statuses of store.RUN_STATUSES, minus the verdict
    reason: str
    iterations_done: int
    failures: int
    events: list[dict[str, Any]] = field(default_factory=list)
